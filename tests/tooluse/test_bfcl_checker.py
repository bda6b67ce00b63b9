"""BFCL's AST checker semantics (agentenv.rewards.bfcl), one hand-made case per rule."""

from __future__ import annotations

import pytest

from agentenv.rewards.bfcl import (
    ASTResult,
    check,
    check_call,
    checker_for,
    standardize_string,
)
from agentenv.toolcalls import ToolCall


def function(name: str, properties: dict, required: list[str]) -> dict:
    return {
        "name": name,
        "description": "",
        "parameters": {"type": "dict", "properties": properties, "required": required},
    }


AREA = function(
    "geometry.area",
    {
        "radius": {"type": "float"},
        "units": {"type": "string"},
        "precise": {"type": "boolean"},
    },
    ["radius"],
)
AREA_ANSWER = {"geometry.area": {"radius": [2.0], "units": ["cm", ""], "precise": ["", False]}}
EVENT = function(
    "create_event",
    {
        "title": {"type": "string"},
        "attendees": {"type": "array", "items": {"type": "string"}},
        "count": {"type": "integer"},
        "reminder": {"type": "dict", "properties": {}},
        "route": {"type": "tuple", "items": {"type": "string"}},
        "parcels": {"type": "array", "items": {"type": "dict"}},
        "payload": {"type": "any"},
    },
    ["title"],
)
EVENT_ANSWER = {
    "create_event": {
        "title": ["Budget Review"],
        "attendees": [["Ana Lopez", "bo"], ""],
        "count": [3, ""],
        "reminder": [{"minutes": [30], "method": ["email", ""]}, ""],
        "route": [["Ghent", "Bruges"], ""],
        "parcels": [[{"kg": [1.5]}, {"kg": [3.0]}], ""],
        "payload": [42, "x", ""],
    }
}
PRIME = function("is_prime", {"n": {"type": "integer"}}, ["n"])


def simple(call: dict, fn: dict = EVENT, answer: dict = EVENT_ANSWER) -> ASTResult:
    return check([fn], [answer], [call], "simple")


def event(**arguments) -> dict:
    return {"create_event": {"title": "Budget Review", **arguments}}


# -- one call ---------------------------------------------------------------------------------
def test_the_expected_call_is_valid():
    assert simple({"geometry.area": {"radius": 2.0}}, AREA, AREA_ANSWER) == ASTResult(True)


def test_a_wrong_name_fails():
    result = simple({"geometry.volume": {"radius": 2.0}}, AREA, AREA_ANSWER)
    assert result.error_type == "simple_function_checker:wrong_func_name"
    assert not result.valid


def test_dots_may_become_underscores_only_when_allowed():
    call = [{"geometry_area": {"radius": 2.0}}]
    assert not check([AREA], [AREA_ANSWER], call, "simple").valid
    assert check([AREA], [AREA_ANSWER], call, "simple", dots_to_underscores=True).valid


def test_a_missing_required_parameter_fails():
    result = simple({"geometry.area": {"units": "cm"}}, AREA, AREA_ANSWER)
    assert result.error_type == "simple_function_checker:missing_required"


def test_a_parameter_outside_schema_or_answer_is_unexpected():
    outside_schema = simple({"geometry.area": {"radius": 2.0, "color": "red"}}, AREA, AREA_ANSWER)
    answer = {"geometry.area": {"radius": [2.0]}}  # the schema has units, the answer does not
    outside_answer = simple({"geometry.area": {"radius": 2.0, "units": "cm"}}, AREA, answer)
    for result in (outside_schema, outside_answer):
        assert result.error_type == "simple_function_checker:unexpected_param"


def test_a_wrong_type_fails_and_a_bool_is_not_an_integer():
    assert simple(event(count="3")).error_type == "type_error:simple"
    assert simple(event(count=True)).error_type == "type_error:simple"
    assert simple(event(count=3.0)).error_type == "type_error:simple"


def test_an_integer_is_accepted_for_a_float():
    assert simple({"geometry.area": {"radius": 2}}, AREA, AREA_ANSWER).valid


def test_the_items_of_an_array_are_type_checked():
    assert simple(event(attendees=["Ana Lopez", 7])).error_type == "type_error:nested"


def test_a_value_of_the_answers_type_passes_as_a_variable():
    # BFCL's variable rule: the answer lists a string where the schema says integer
    answer = {"is_prime": {"n": ["my_number"]}}
    assert simple({"is_prime": {"n": "my_number"}}, PRIME, answer).valid
    assert simple({"is_prime": {"n": "other"}}, PRIME, answer).error_type == "value_error:others"


def test_a_python_tuple_counts_as_a_list_where_the_schema_says_tuple():
    assert simple(event(route=("Ghent", "Bruges"))).valid
    assert simple(event(attendees=("Ana Lopez", "bo"))).error_type == "type_error:simple"


def test_strings_are_standardized_before_membership():
    assert standardize_string("April 1, 2024 - a_b*c^d/e.f 'x'") == 'april12024abcdef"x"'
    assert simple({"create_event": {"title": "budget-review"}}).valid
    assert simple({"create_event": {"title": "BUDGET_REVIEW."}}).valid
    result = simple({"create_event": {"title": "Budget Reviews"}})
    assert result.error_type == "value_error:string"


def test_lists_compare_element_wise_with_standardized_strings():
    assert simple(event(attendees=["ana lopez", "BO"])).valid
    assert simple(event(attendees=["bo", "Ana Lopez"])).error_type == "value_error:list/tuple"
    assert simple(event(attendees=["Ana Lopez"])).error_type == "value_error:list/tuple"


def test_dicts_compare_key_by_key():
    assert simple(event(reminder={"minutes": 30})).valid  # method may be omitted
    assert simple(event(reminder={"minutes": 30, "method": "E-mail"})).valid
    assert simple(event(reminder={"minutes": 31})).error_type == "value_error:dict_value"
    assert simple(event(reminder={"minutes": 30, "x": 1})).error_type == "value_error:dict_key"
    assert simple(event(reminder={"method": "email"})).error_type == "value_error:dict_key"


def test_lists_of_dicts_compare_dict_by_dict():
    assert simple(event(parcels=[{"kg": 1.5}, {"kg": 3.0}])).valid
    assert simple(event(parcels=[{"kg": 3.0}, {"kg": 1.5}])).error_type == "value_error:dict_value"
    assert simple(event(parcels=[{"kg": 1.5}])).error_type == "value_error:list_dict_count"


def test_any_constrains_no_type_but_the_value_must_be_allowed():
    assert simple(event(payload=42)).valid
    assert simple(event(payload="X")).valid
    assert simple(event(payload=43)).error_type == "value_error:others"


def test_a_parameter_may_be_omitted_only_when_its_answer_allows_it():
    answer = {"geometry.area": {"radius": [2.0], "units": ["cm"]}}
    result = simple({"geometry.area": {"radius": 2.0}}, AREA, answer)
    assert result.error_type == "simple_function_checker:missing_optional"


def test_other_values_must_be_allowed():
    result = simple({"geometry.area": {"radius": 2.5}}, AREA, AREA_ANSWER)
    assert result.error_type == "value_error:others"
    assert "radius" in result.message


def test_check_call_takes_tool_calls():
    assert check_call(AREA, AREA_ANSWER, ToolCall("geometry.area", {"radius": 2})).valid


# -- categories -------------------------------------------------------------------------------
def test_simple_needs_exactly_one_call():
    calls = [{"geometry.area": {"radius": 2.0}}] * 2
    result = check([AREA], [AREA_ANSWER], calls, "simple_python")
    assert result.error_type == "simple_function_checker:wrong_count"
    assert check([AREA], [AREA_ANSWER], [], "live_simple").error_type.endswith("wrong_count")


def test_multiple_picks_the_expected_function_with_one_call():
    functions = [PRIME, AREA]
    right = [{"geometry.area": {"radius": 2.0}}]
    assert check(functions, [AREA_ANSWER], right, "multiple").valid
    wrong = check(functions, [AREA_ANSWER], [{"is_prime": {"n": 2}}], "multiple")
    assert wrong.error_type == "simple_function_checker:wrong_func_name"


def test_multiple_with_two_calls_fails():
    calls = [{"geometry.area": {"radius": 2.0}}, {"is_prime": {"n": 2}}]
    result = check([PRIME, AREA], [AREA_ANSWER], calls, "live_multiple")
    assert result.error_type == "multiple_function_checker:wrong_count"


PARALLEL_ANSWER = [{"is_prime": {"n": [7]}}, {"is_prime": {"n": [9]}}, {"is_prime": {"n": [11]}}]


def test_parallel_is_order_free():
    for order in ([7, 9, 11], [11, 7, 9], [9, 11, 7]):
        calls = [ToolCall("is_prime", {"n": n}) for n in order]
        assert check([PRIME], PARALLEL_ANSWER, calls, "parallel").valid


def test_parallel_matches_one_to_one_and_counts_must_match():
    twice = [ToolCall("is_prime", {"n": n}) for n in (7, 7, 11)]
    result = check([PRIME], PARALLEL_ANSWER, twice, "parallel")
    assert result.error_type == "parallel_function_checker_no_order:cannot_find_match"
    short = [ToolCall("is_prime", {"n": n}) for n in (7, 9)]
    result = check([PRIME], PARALLEL_ANSWER, short, "parallel")
    assert result.error_type == "parallel_function_checker_no_order:wrong_count"


def test_parallel_multiple_mixes_functions_in_any_order():
    answer = [AREA_ANSWER, {"is_prime": {"n": [7]}}]
    calls = [{"is_prime": {"n": 7}}, {"geometry.area": {"radius": 2}}]
    assert check([AREA, PRIME], answer, calls, "parallel_multiple").valid
    bad = [{"is_prime": {"n": 8}}, {"geometry.area": {"radius": 2}}]
    assert not check([AREA, PRIME], answer, bad, "live_parallel_multiple").valid


def test_irrelevance_passes_without_a_call_and_fails_with_one():
    assert check([PRIME], [], [], "irrelevance").valid
    result = check([PRIME], [], [{"is_prime": {"n": 2}}], "live_irrelevance")
    assert result.error_type == "irrelevance_error:decoder_success"


def test_relevance_needs_some_call():
    assert check([PRIME], [], [{"is_prime": {"n": 0}}], "live_relevance").valid
    assert check([PRIME], [], [], "live_relevance").error_type == "relevance_error:decoder_failed"


@pytest.mark.parametrize(
    ("category", "checker"),
    [
        ("simple_python", "simple"),
        ("live_simple", "simple"),
        ("multiple", "multiple"),
        ("live_parallel", "parallel"),
        ("parallel_multiple", "parallel_multiple"),
        ("live_irrelevance", "irrelevance"),
        ("live_relevance", "relevance"),
    ],
)
def test_category_names_map_to_checkers(category, checker):
    assert checker_for(category) == checker


@pytest.mark.parametrize("category", ["simple_java", "simple_javascript", "multi_turn_base", "x"])
def test_unsupported_categories_are_refused(category):
    with pytest.raises(ValueError, match=category):
        checker_for(category)


def test_an_answer_naming_an_unoffered_function_is_a_data_error():
    with pytest.raises(ValueError, match="not offered"):
        check([PRIME], [AREA_ANSWER], [{"geometry.area": {"radius": 2}}], "simple")
