// agentenv view: the trajectory viewer's page script. Plain JavaScript, no build step.
//
// Views (the URL hash is the state, so the back button and links work):
//   #/list?FILTERS   the episodes, filtered and sorted, 100 per page
//   #/episode/ID     one episode as a chat, with rewards, credit, anchors and its tokens
//   #/group/ID       the episodes of ID's group side by side
//   #/curves         learning curves of a training run; a point opens its step's episodes
// Data comes from the JSON API of `agentenv view RUN` (served mode), or from the document
// embedded in the page by `agentenv view RUN --html OUT` (static mode).
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("agentenv-data").textContent);
  const PAGE_SIZE = 100;
  const COLUMNS = [
    ["id", "#", "num"], ["split", "split"], ["step", "step", "num"], ["env", "env"],
    ["task", "task"], ["sample", "sample"], ["success", "success"], ["reward", "reward", "num"],
    ["turns", "turns", "num"], ["tokens", "tokens", "num"], ["status", "status"],
    ["failure", "failure reason"],
  ];
  const CURVES = [
    ["train", "reward"], ["train", "success"], ["eval", "success"], ["eval", "reward"],
    ["train", "adv_std"], ["train", "loss"], ["train", "kl"], ["train", "entropy"],
    ["train", "clip_fraction"], ["train", "grad_norm"], ["train", "turns"],
    ["train", "response_tokens"],
  ];
  const app = document.getElementById("app");
  const prefs = { estimator: null, colour: "mask" };
  let run = null;
  let listIds = [];

  // ------------------------------------------------------------------------------ data
  const source = DATA.mode === "static" ? staticSource(DATA) : servedSource();

  function servedSource() {
    const cache = new Map();
    async function get(path) {
      const response = await fetch(path);
      if (!response.ok) {
        let detail = response.statusText;
        try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
        throw new Error(`${path}: ${detail}`);
      }
      return response.json();
    }
    return {
      run: () => get("api/run"),
      episode(id) {
        if (!cache.has(id)) cache.set(id, get(`api/episodes/${id}`));
        return cache.get(id);
      },
    };
  }

  function staticSource(data) {
    const cache = new Map();
    async function gunzipJson(b64) {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
      return JSON.parse(await new Response(stream).text());
    }
    return {
      run: async () => data.run,
      episode(id) {
        const blob = data.episodes[String(id)];
        if (blob === undefined) {
          return Promise.reject(new Error(
            `episode ${id} is not in this file: it holds ${data.embedded} of ${data.total} ` +
            "episodes (exported with --max-episodes)"));
        }
        if (!cache.has(id)) cache.set(id, gunzipJson(blob));
        return cache.get(id);
      },
    };
  }

  // ------------------------------------------------------------------------------ helpers
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }
  const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" :
    typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toFixed(digits)) : String(x));
  const signed = (x) => (x === null || x === undefined ? "–" : (x > 0 ? "+" : "") + x.toFixed(3));

  function show(...nodes) {
    app.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));
    window.scrollTo(0, 0);
  }

  function fail(error) {
    show(h("p", { class: "bad", id: "error", text: String(error.message || error) }));
  }

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [path, query] = raw.split("?");
    const parts = path.split("/").filter(Boolean);
    return { view: parts[0] || "list", id: parts[1], params: new URLSearchParams(query || "") };
  }

  // ------------------------------------------------------------------------------ start
  async function start() {
    try {
      run = await source.run();
    } catch (error) {
      fail(error);
      return;
    }
    prefs.estimator = run.estimator || "grpo";
    const ok = run.episodes.filter((e) => e.status !== "error");
    const wins = ok.filter((e) => e.success).length;
    const info = run.info || {};
    const about = run.kind === "train"
      ? [`training run of ${(info.envs || []).join(", ")}`, info.group_size && `groups of ${info.group_size}`,
        `estimator ${run.estimator}`]
      : [`evaluation of ${info.policy || "a policy"}`, info.k && `k = ${info.k}`,
        info.transcripts === null && "no transcripts"];
    document.getElementById("run-stats").textContent = [
      ...about.filter(Boolean), `${run.episodes.length} episodes`,
      ok.length ? `success ${(100 * wins / ok.length).toFixed(1)}%` : null,
    ].filter(Boolean).join(" · ");
    if (DATA.mode === "static" && DATA.embedded < DATA.total) {
      const notice = document.getElementById("notice");
      notice.hidden = false;
      notice.textContent = `This file holds the transcripts of ${DATA.embedded} of ` +
        `${DATA.total} episodes (exported with --max-episodes); the list shows them all.`;
    }
    window.addEventListener("hashchange", route);
    route();
  }

  function renderTabs(view) {
    const tabs = [["list", "Episodes"]];
    if (run.kind === "train" && run.metrics.length) tabs.push(["curves", "Learning curves"]);
    document.getElementById("tabs").replaceChildren(...tabs.map(([key, label]) =>
      h("a", { href: `#/${key}`, class: view === key ? "active" : null, id: `tab-${key}` }, label)));
  }

  function route() {
    const { view, id, params } = parseHash();
    renderTabs(view === "curves" ? "curves" : "list");
    if (view === "episode") renderEpisode(Number(id)).catch(fail);
    else if (view === "group") renderGroup(Number(id)).catch(fail);
    else if (view === "curves") renderCurves();
    else renderList(params);
  }

  // ------------------------------------------------------------------------------ list
  const FILTERS = ["env", "split", "step", "task", "success", "status", "failure",
    "rmin", "rmax", "tmin", "tmax"];

  function matches(e, f) {
    if (f.env && e.env !== f.env) return false;
    if (f.split && e.split !== f.split) return false;
    if (f.step && String(e.step) !== f.step) return false;
    if (f.task && !e.task.toLowerCase().includes(f.task.toLowerCase())) return false;
    if (f.success && e.success !== (f.success === "yes")) return false;
    if (f.status && e.status !== f.status) return false;
    if (f.failure && e.failure !== f.failure) return false;
    if (f.rmin && !(e.reward >= Number(f.rmin))) return false;
    if (f.rmax && !(e.reward <= Number(f.rmax))) return false;
    if (f.tmin && !(e.turns >= Number(f.tmin))) return false;
    if (f.tmax && !(e.turns <= Number(f.tmax))) return false;
    return true;
  }

  function compare(key) {
    return (a, b) => {
      const x = a[key], y = b[key];
      if (x === y) return a.id - b.id;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return typeof x === "number" || typeof x === "boolean" ? x - y : String(x).localeCompare(String(y));
    };
  }

  function facet(key) {
    const counts = new Map();
    for (const e of run.episodes) {
      const value = e[key] === null || e[key] === undefined ? "" : String(e[key]);
      if (value !== "") counts.set(value, (counts.get(value) || 0) + 1);
    }
    return [...counts.entries()].sort((a, b) =>
      key === "step" ? Number(a[0]) - Number(b[0]) : b[1] - a[1] || a[0].localeCompare(b[0]));
  }

  function listHash(params) {
    const clean = new URLSearchParams();
    for (const [k, v] of params) if (v !== "") clean.set(k, v);
    return "#/list" + (String(clean) ? "?" + clean : "");
  }

  function renderList(params) {
    const f = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || ""]));
    const sortKey = params.get("sort") || "id";
    const desc = params.get("desc") === "1";
    const page = Math.max(0, Number(params.get("page") || 0));
    let rows = run.episodes.filter((e) => matches(e, f)).sort(compare(sortKey));
    if (desc) rows.reverse();
    listIds = rows.map((e) => e.id);
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
    const shown = rows.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE);

    const go = (changes) => {
      const next = new URLSearchParams(params);
      for (const [k, v] of Object.entries(changes)) next.set(k, v);
      if (!("page" in changes)) next.delete("page");
      location.hash = listHash(next);
    };
    const select = (key, label, options) => h("label", {}, label,
      h("select", { id: `f-${key}`, onchange: (ev) => go({ [key]: ev.target.value }) },
        h("option", { value: "" }, "any"),
        options.map(([value, n]) => h("option", { value, selected: value === f[key] },
          n === undefined ? value : `${value} (${n})`))));
    const number = (key, label) => h("label", {}, label, h("input", {
      type: "number", step: "any", id: `f-${key}`, value: f[key],
      onchange: (ev) => go({ [key]: ev.target.value }),
    }));
    const splits = facet("split");
    const steps = facet("step");
    const filters = h("div", { class: "filters", id: "filters" },
      facet("env").length > 1 ? select("env", "env", facet("env")) : null,
      splits.length > 1 ? select("split", "split", splits) : null,
      steps.length ? select("step", "step", steps) : null,
      h("label", {}, "task contains", h("input", {
        type: "text", id: "f-task", value: f.task, onchange: (ev) => go({ task: ev.target.value }),
      })),
      select("success", "success", [["yes"], ["no"]]),
      select("status", "status", facet("status")),
      select("failure", "failure reason", facet("failure")),
      number("rmin", "reward ≥"), number("rmax", "reward ≤"),
      number("tmin", "turns ≥"), number("tmax", "turns ≤"),
      h("button", { id: "f-clear", onclick: () => { location.hash = "#/list"; } }, "clear"));

    const head = h("tr", {}, COLUMNS.map(([key, label, cls]) => h("th", {
      class: [cls, key === sortKey ? "sorted" : "", key === sortKey && desc ? "desc" : ""].join(" ").trim() || null,
      "data-key": key,
      onclick: () => go({ sort: key, desc: key === sortKey && !desc ? "1" : "" }),
    }, label)));
    const body = h("tbody", {}, shown.map((e) => h("tr", {
      "data-id": e.id, onclick: () => { location.hash = `#/episode/${e.id}`; },
    }, COLUMNS.map(([key, , cls]) => {
      const value = e[key];
      if (key === "success") return h("td", { class: value ? "ok" : "bad" }, value ? "yes" : "no");
      if (key === "failure") return h("td", { class: "failure" }, value);
      return h("td", { class: cls || null }, fmt(value));
    }))));
    const pager = h("div", { class: "pager" },
      h("button", { id: "prev-page", disabled: page === 0, onclick: () => go({ page: page - 1 }) }, "‹ previous"),
      h("span", {}, `page ${page + 1} of ${pages}`),
      h("button", { id: "next-page", disabled: page + 1 >= pages, onclick: () => go({ page: page + 1 }) }, "next ›"));
    const first = rows.length ? page * PAGE_SIZE + 1 : 0;
    show(filters,
      h("div", { class: "count", id: "count" },
        `${rows.length} of ${run.episodes.length} episodes` +
        (rows.length ? ` · showing ${first}–${page * PAGE_SIZE + shown.length}` : "")),
      h("table", { class: "episodes", id: "episodes" }, h("thead", {}, head), body),
      pager);
  }

  // ------------------------------------------------------------------------------ episode
  function estimatorSelect(onchange) {
    return h("label", {}, "advantage under",
      h("select", { id: "estimator", onchange: (ev) => { prefs.estimator = ev.target.value; onchange(); } },
        run.estimators.map((name) => h("option", { value: name, selected: name === prefs.estimator },
          name + (name === run.estimator ? " (the run's)" : "")))));
  }

  function colourSelect(onchange) {
    return h("label", {}, "colour tokens by",
      h("select", { id: "colour", onchange: (ev) => { prefs.colour = ev.target.value; onchange(); } },
        [["mask", "loss mask"], ["advantage", "advantage"], ["logprob", "log-probability"]].map(
          ([value, label]) => h("option", { value, selected: value === prefs.colour }, label))));
  }

  function legend() {
    const sw = (colour) => h("span", { class: "swatch", style: `background:${colour}` });
    if (prefs.colour === "mask") {
      return h("span", { class: "legend" }, h("span", {}, sw("var(--mask-on)"), "loss mask 1 (trained)"),
        h("span", {}, sw("var(--mask-off)"), "loss mask 0 (prompt, observations)"));
    }
    if (prefs.colour === "advantage") {
      return h("span", { class: "legend" }, h("span", {}, sw(advColour(1, 1)), "positive advantage"),
        h("span", {}, sw(advColour(-1, 1)), "negative"), h("span", {}, sw("var(--mask-off)"), "masked out"));
    }
    return h("span", { class: "legend" }, h("span", {}, sw(lpColour(-0.05)), "likely"),
      h("span", {}, sw(lpColour(-5)), "unlikely token"), h("span", {}, sw("var(--mask-off)"), "masked out"));
  }

  function advColour(value, scale) {
    if (value === null || value === undefined) return "var(--mask-on)";
    const t = Math.max(-1, Math.min(1, scale ? value / scale : 0));
    const alpha = (0.15 + 0.7 * Math.abs(t)).toFixed(2);
    return t >= 0 ? `rgba(22, 163, 74, ${alpha})` : `rgba(220, 38, 38, ${alpha})`;
  }

  function lpColour(logprob) {
    const p = Math.exp(logprob);
    return `rgba(37, 99, 235, ${(0.1 + 0.75 * (1 - p)).toFixed(2)})`;
  }

  function segmentKind(seg) {
    return seg.loss_mask ? "action" : seg.turn < 0 ? "prompt" : "observation";
  }

  function renderSegment(seg, ep) {
    const kind = segmentKind(seg);
    const adv = seg.loss_mask ? (ep.turns[seg.turn] || { advantages: {} }).advantages[prefs.estimator] : null;
    const scale = Math.max(1e-9, ...ep.turns.map((t) => Math.abs(t.advantages[prefs.estimator] || 0)));
    const texts = seg.text || seg.ids.map((id) => `⟨${id}⟩`);
    const spans = texts.map((text, i) => {
      const lp = seg.logprobs ? seg.logprobs[i] : null;
      let style = null;
      if (seg.loss_mask && prefs.colour === "advantage") style = `background:${advColour(adv, scale)}`;
      if (seg.loss_mask && prefs.colour === "logprob" && lp !== null) style = `background:${lpColour(lp)}`;
      const title = `id ${seg.ids[i]} · loss mask ${seg.loss_mask}` +
        (lp !== null ? ` · logprob ${lp.toFixed(3)}` : "") +
        (seg.loss_mask && adv !== null && adv !== undefined ? ` · advantage ${signed(adv)}` : "");
      return h("span", {
        class: `tok m${seg.loss_mask}` + (text === "" ? " empty" : ""), style, title,
        "data-mask": seg.loss_mask,
      }, text.replace(/\n/g, "↵\n"));
    });
    return h("div", { class: "segment", "data-kind": kind, "data-turn": seg.turn },
      h("span", { class: "seglabel" }, `${kind} · ${seg.ids.length} tokens`), spans,
      seg.cut ? h("span", { class: "cutnote" }, ` … ${seg.cut} more tokens cut by the transcript cap`) : null);
  }

  function renderMessage(m) {
    const calls = (m.tool_calls || []).map((c) => {
      const fn = c.function || {};
      let args = fn.arguments;
      try { args = JSON.stringify(JSON.parse(args), null, 1); } catch (_) { /* keep the raw text */ }
      return h("div", { class: "toolcall" }, h("code", {}, `${fn.name}(`), h("pre", {}, args), h("code", {}, ")"));
    });
    const role = m.role + (m.name ? ` · ${m.name}` : "") + (m.tool_call_id ? ` · ${m.tool_call_id}` : "");
    return h("div", { class: `msg ${m.role}`, "data-role": m.role },
      h("div", { class: "role" }, role),
      m.content ? h("pre", {}, m.content) : null, calls,
      m.cut ? h("div", { class: "cutnote" }, `${m.cut} characters cut by the transcript cap`) : null);
  }

  function creditBox(turn, ep) {
    const comps = Object.entries(turn.components || {});
    const rows = run.estimators.map((name) => {
      const value = turn.advantages[name];
      const error = ep.credit_errors[name];
      return h("tr", { class: name === prefs.estimator ? "selected" : null, "data-estimator": name },
        h("td", {}, name + (name === run.estimator ? " ★" : "")),
        h("td", { class: "num", title: error || null }, value === undefined ? "n/a" : signed(value)));
    });
    return h("div", { class: "credit" },
      h("div", {}, "reward ", h("b", { class: "turn-reward" }, fmt(turn.reward)),
        turn.trained_reward !== null && turn.trained_reward !== turn.reward
          ? h("span", { class: "muted" }, ` (fed to the estimator: ${fmt(turn.trained_reward)})`) : null,
        " · ", turn.valid ? h("span", { class: "ok" }, "valid action") : h("span", { class: "bad" }, "invalid action")),
      comps.length ? h("table", { class: "components" }, comps.map(([name, value]) =>
        h("tr", { "data-component": name }, h("td", {}, name), h("td", { class: "num" }, fmt(value))))) : null,
      h("div", { class: "muted" }, ep.saved_credit
        ? "advantages (★ the run's, as trained; others computed over the group)"
        : "advantages over the group"),
      h("table", { class: "advantages" }, rows),
      h("div", { class: "muted" }, "anchor"),
      h("code", { class: "anchor" }, turn.anchor),
      h("div", { class: "muted anchor-peers" },
        `shared by ${turn.anchor_turns} turn${turn.anchor_turns === 1 ? "" : "s"} in ` +
        `${turn.anchor_episodes} episode${turn.anchor_episodes === 1 ? "" : "s"} of the group`));
  }

  function episodeHeader(ep, rerender) {
    const s = ep.summary;
    const idx = listIds.indexOf(s.id);
    const nav = (delta) => { const next = listIds[idx + delta]; if (next !== undefined) location.hash = `#/episode/${next}`; };
    const comps = Object.entries(s.components || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
    return [
      h("div", { class: "ep-head" },
        h("a", { href: "#/list", id: "back" }, "← episodes"),
        h("h2", {}, `episode ${s.id} · ${s.env} · ${s.task}`),
        h("span", { class: `badge ${s.success ? "ok" : "bad"}`, id: "ep-success" }, s.success ? "success" : "no success"),
        h("span", { class: "badge" }, s.status + (s.reason ? `: ${s.reason}` : "")),
        h("span", {}, "reward ", h("b", { id: "ep-reward" }, fmt(s.reward))),
        comps ? h("span", { class: "muted", id: "ep-components" }, comps) : null,
        h("span", { class: "muted" }, `${s.split}${s.step !== null ? ` step ${s.step}` : ""} · sample ${s.sample} · ${s.turns} turns · ${s.tokens} generated tokens`),
        s.failure ? h("span", { class: "bad" }, s.failure) : null),
      h("div", { class: "controls" },
        estimatorSelect(rerender), colourSelect(rerender), legend(),
        h("a", { href: `#/group/${s.id}`, id: "open-group" }, `group: ${ep.group.length} episode${ep.group.length === 1 ? "" : "s"} →`),
        h("button", { id: "prev-ep", disabled: idx <= 0, onclick: () => nav(-1) }, "‹ previous"),
        h("button", { id: "next-ep", disabled: idx < 0 || idx + 1 >= listIds.length, onclick: () => nav(1) }, "next ›")),
    ];
  }

  async function renderEpisode(id) {
    const ep = await source.episode(id);
    if (listIds.length === 0) listIds = run.episodes.map((e) => e.id);
    const draw = () => {
      const byTurn = (list, turn) => list.filter((x) => x.turn === turn);
      const prompt = h("div", { class: "turn prompt", "data-turn": -1 },
        h("div", {}, h("h3", {}, "prompt"),
          byTurn(ep.messages, -1).map((m) => m.role === "system"
            ? h("details", {}, h("summary", {}, `system prompt (${(m.content || "").length} characters)`), renderMessage(m))
            : renderMessage(m)),
          h("details", { class: "prompt-tokens" }, h("summary", {}, "prompt tokens"),
            h("div", { class: "tokens" }, byTurn(ep.tokens, -1).map((seg) => renderSegment(seg, ep))))),
        h("div", { class: "credit muted" }, ep.has_transcript ? "the prompt carries no loss"
          : "no transcript in this row (evaluated with --no-transcripts)"));
      const turns = ep.turns.map((turn) => h("div", { class: "turn", "data-turn": turn.index },
        h("div", {}, h("h3", {}, `turn ${turn.index}`),
          byTurn(ep.messages, turn.index).map(renderMessage),
          byTurn(ep.tokens, turn.index).length
            ? h("div", { class: "tokens" }, byTurn(ep.tokens, turn.index).map((seg) => renderSegment(seg, ep)))
            : null),
        creditBox(turn, ep)));
      const cut = ep.cut ? h("p", { class: "cutnote", id: "cut" },
        `The transcript cap cut ${ep.cut.chars} characters and ${ep.cut.tokens} tokens of this episode.`) : null;
      const scroll = window.scrollY;
      show(...episodeHeader(ep, draw), cut, prompt, ...turns);
      window.scrollTo(0, scroll);
    };
    draw();
    window.scrollTo(0, 0);
  }

  // ------------------------------------------------------------------------------ group
  async function renderGroup(id) {
    const first = await source.episode(id);
    const members = await Promise.all(first.group.map((m) => source.episode(m)));
    const draw = () => {
      const cols = members.map((ep) => {
        const s = ep.summary;
        const total = ep.turns.reduce((acc, t) => acc + (t.advantages[prefs.estimator] || 0), 0);
        return h("div", { class: "gcol" + (s.id === id ? " current" : ""), "data-id": s.id },
          h("h3", {}, h("a", { href: `#/episode/${s.id}` }, `episode ${s.id}`), ` · sample ${s.sample}`),
          h("div", {}, h("span", { class: `badge ${s.success ? "ok" : "bad"}` }, s.success ? "success" : "no success"),
            ` reward ${fmt(s.reward)} · ${s.turns} turns`),
          h("div", { class: "muted" }, `Σ advantage (${prefs.estimator}) `, h("span", { class: "adv" }, signed(total))),
          ep.turns.map((turn) => {
            const action = ep.messages.find((m) => m.turn === turn.index && m.role === "assistant");
            const text = action ? (action.content || "") + (action.tool_calls || []).map((c) =>
              ` → ${(c.function || {}).name}(${(c.function || {}).arguments})`).join("") : "";
            return h("div", { class: "gturn", "data-turn": turn.index },
              h("div", {}, `turn ${turn.index} · reward ${fmt(turn.reward)} · `,
                h("span", { class: "adv", style: `background:${advColour(turn.advantages[prefs.estimator], 1)}` },
                  signed(turn.advantages[prefs.estimator])),
                turn.valid ? "" : h("span", { class: "bad" }, " · invalid")),
              h("pre", {}, text.length > 400 ? text.slice(0, 400) + "…" : text),
              h("div", { class: "muted" }, `anchor shared by ${turn.anchor_turns} turns in ${turn.anchor_episodes} episodes`));
          }));
      });
      show(
        h("div", { class: "ep-head" },
          h("a", { href: `#/episode/${id}`, id: "back" }, "← episode"),
          h("h2", {}, `group: ${first.group_key}`),
          h("span", { class: "muted", id: "group-size" }, `${members.length} episodes of one task, compared by GRPO/RLOO (returns) and GiGPO (anchors)`)),
        h("div", { class: "controls" }, estimatorSelect(draw)),
        h("div", { class: "group-grid", id: "group" }, cols));
    };
    draw();
  }

  // ------------------------------------------------------------------------------ curves
  function renderCurves() {
    const charts = CURVES.map(([kind, key]) => {
      const points = run.metrics.filter((r) => r.kind === kind && typeof r[key] === "number");
      return points.length ? chart(kind, key, points) : null;
    }).filter(Boolean);
    show(h("p", { class: "muted" }, "Click a point to open the episodes of that step."),
      h("div", { class: "curves", id: "curves" }, charts));
  }

  function chart(kind, key, points) {
    const W = 380, H = 190, L = 44, R = 10, T = 10, B = 26;
    const xs = points.map((p) => p.step), ys = points.map((p) => p[key]);
    const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
    const sx = (x) => L + (x1 === x0 ? (W - L - R) / 2 : ((x - x0) / (x1 - x0)) * (W - L - R));
    const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const add = (tag, attrs, text) => {
      const el = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
      if (text !== undefined) el.textContent = text;
      svg.append(el);
      return el;
    };
    add("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#9ca3af" });
    add("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#9ca3af" });
    for (const y of [y0, (y0 + y1) / 2, y1]) {
      add("text", { x: L - 4, y: sy(y) + 4, "text-anchor": "end", "font-size": 10, fill: "#6b7280" },
        String(Number(y.toPrecision(4))));
    }
    add("text", { x: L, y: H - 8, "font-size": 10, fill: "#6b7280" }, `step ${x0}`);
    add("text", { x: W - R, y: H - 8, "text-anchor": "end", "font-size": 10, fill: "#6b7280" }, `step ${x1}`);
    const colour = kind === "eval" ? "#b45309" : "#2563eb";
    add("polyline", { points: points.map((p) => `${sx(p.step)},${sy(p[key])}`).join(" "), fill: "none", stroke: colour, "stroke-width": 2 });
    const split = kind === "eval" ? "held-out" : "train";
    for (const p of points) {
      const dot = add("circle", { cx: sx(p.step), cy: sy(p[key]), r: 4, fill: colour, class: "pt", "data-step": p.step });
      const title = document.createElementNS(ns, "title");
      title.textContent = `step ${p.step}: ${key} ${fmt(p[key])} (click: its episodes)`;
      dot.append(title);
      dot.addEventListener("click", () => { location.hash = listHash(new URLSearchParams({ split, step: String(p.step) })); });
    }
    return h("div", { class: "chart", "data-metric": `${kind}/${key}` }, h("h3", {}, `${kind === "eval" ? "held-out" : "train"} ${key}`), svg);
  }

  start();
})();
