"""Tool-capable chat templates written for the tests in the style of three model families.

Each keeps what matters to token-faithful tool use in its family: where tools are rendered, how
an assistant's calls and the tool results look, how a turn closes.

- ``QWEN25``: default system prompt, ``# Tools`` block, ``arguments | tojson`` applied
  unconditionally (a string is double-encoded), tool results merged into one user turn.
- ``QWEN3``: no default system prompt, string-or-dict ``arguments``, ``<think>`` split out of the
  assistant content and re-rendered.
- ``LLAMA31``: tools in the first user message, JSON calls with ``"parameters"`` as the whole
  message (one per turn), results in an ``ipython`` turn, ``<|eot_id|>`` closes.
- ``PYTHONIC``: Llama-style headers, calls as ``[f(a=1)]``, several per turn.
"""

QWEN_TOOLS_HEADER = (
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\' }}'
)

QWEN_TOOL_RESPONSES = (
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
)

QWEN25 = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}"
    "{%- else %}{{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\\n\\n' }}"
    "{%- endif %}" + QWEN_TOOLS_HEADER + "{%- else %}"
    "{%- if messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}{%- endif %}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or "
    "(message.role == 'assistant' and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>' + message.role }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    '{{- \'\\n<tool_call>\\n{"name": "\' }}{{- tool_call.name }}{{- \'", "arguments": \' }}'
    "{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}" + QWEN_TOOL_RESPONSES + "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

QWEN3 = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    + QWEN_TOOLS_HEADER
    + "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- set content = message.content %}{%- set reasoning = '' %}"
    "{%- if '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls or [] %}"
    "{%- if (loop.first and content) or (not loop.first) %}{{- '\\n' }}{%- endif %}"
    "{%- if tool_call.function %}{%- set tool_call = tool_call.function %}{%- endif %}"
    '{{- \'<tool_call>\\n{"name": "\' }}{{- tool_call.name }}{{- \'", "arguments": \' }}'
    "{%- if tool_call.arguments is string %}{{- tool_call.arguments }}"
    "{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}{{- '}\\n</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}" + QWEN_TOOL_RESPONSES + "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

LLAMA_HEADER = "'<|start_header_id|>' + {role} + '<|end_header_id|>\\n\\n'"

LLAMA31 = (
    "{{- bos_token }}"
    "{%- set system_message = messages[0].content if messages[0].role == 'system' else '' %}"
    "{%- set messages = messages[1:] if messages[0].role == 'system' else messages %}"
    "{{- " + LLAMA_HEADER.format(role="'system'") + " }}"
    "{%- if tools %}{{- 'Environment: ipython\\n' }}{%- endif %}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n' }}"
    "{{- system_message + '<|eot_id|>' }}"
    "{%- if tools %}{%- set first_user_message = messages[0].content %}"
    "{%- set messages = messages[1:] %}{{- " + LLAMA_HEADER.format(role="'user'") + " }}"
    "{{- 'Given the following functions, please respond with a JSON for a function call with "
    "its proper arguments that best answers the given prompt.\\n\\n' }}"
    '{{- \'Respond in the format {"name": function name, "parameters": dictionary of argument '
    "name and its value}. Do not use variables.\\n\\n' }}"
    "{%- for t in tools %}{{- t | tojson(indent=4) }}{{- '\\n\\n' }}{%- endfor %}"
    "{{- first_user_message + '<|eot_id|>' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message.role == 'ipython' or message.role == 'tool' or message.tool_calls) %}"
    "{{- " + LLAMA_HEADER.format(role="message.role") + " + message.content + '<|eot_id|>' }}"
    "{%- elif message.tool_calls %}"
    "{%- if not message.tool_calls | length == 1 %}"
    "{{- raise_exception('This model only supports single tool-calls at once!') }}{%- endif %}"
    "{%- set tool_call = message.tool_calls[0].function %}"
    "{{- " + LLAMA_HEADER.format(role="'assistant'") + " }}"
    '{{- \'{"name": "\' + tool_call.name + \'", "parameters": \' }}'
    "{{- tool_call.arguments | tojson }}{{- '}<|eot_id|>' }}"
    "{%- else %}{{- "
    + LLAMA_HEADER.format(role="'ipython'")
    + " + message.content + '<|eot_id|>' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- "
    + LLAMA_HEADER.format(role="'assistant'")
    + " }}{%- endif %}"
)

PYTHONIC = (
    "{%- set system_message = messages[0].content if messages[0].role == 'system' else '' %}"
    "{%- set messages = messages[1:] if messages[0].role == 'system' else messages %}"
    "{{- " + LLAMA_HEADER.format(role="'system'") + " + system_message }}"
    "{%- if tools %}{{- '\\n\\nIf you decide to invoke any of the function(s), you MUST put it "
    "in the format of [func_name1(params_name1=params_value1, params_name2=params_value2...), "
    "func_name2(params)]\\nHere is a list of functions in JSON format that you can invoke.\\n' }}"
    "{%- for t in tools %}{{- t | tojson }}{{- '\\n' }}{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{%- if message.role == 'tool' %}"
    "{{- " + LLAMA_HEADER.format(role="'ipython'") + " + message.content + '<|eot_id|>' }}"
    "{%- elif message.tool_calls %}{{- " + LLAMA_HEADER.format(role="'assistant'") + " + '[' }}"
    "{%- for call in message.tool_calls %}{%- set fn = call.function %}"
    "{{- fn.name + '(' }}{%- for k, v in fn.arguments.items() %}"
    "{{- k + '=' + (v | tojson) }}{%- if not loop.last %}{{- ', ' }}{%- endif %}{%- endfor %}"
    "{{- ')' }}{%- if not loop.last %}{{- ', ' }}{%- endif %}{%- endfor %}"
    "{{- ']<|eot_id|>' }}"
    "{%- else %}"
    "{{- " + LLAMA_HEADER.format(role="message.role") + " + message.content + '<|eot_id|>' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- "
    + LLAMA_HEADER.format(role="'assistant'")
    + " }}{%- endif %}"
)

LLAMA_SPECIAL_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
