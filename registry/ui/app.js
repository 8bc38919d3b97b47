// The registry's page: inventory, decision traces and approvals, refreshed every few seconds.
// A person signs in by pasting their approver token once (the registry keeps it in an HttpOnly
// cookie, so this script never holds it after sending it); only then can they decide approvals.
// Every untrusted string (names, reasons, attributes) enters the DOM as text through `h()`:
// this file never assigns innerHTML.
"use strict";
(() => {
  const REFRESH_MS = 3000;
  const VIEWS = ["agents", "traces", "map", "approvals"];
  const state = {
    view: "agents",
    traceId: null,
    filters: { agent: "", status: "", since: "1h" },
    lapsed: false,
    live: true,
    agents: [],
    traces: [],
    approvals: [],
    tree: null,
    map: null,
    mapSince: "15m",
    mapError: "",
    mapSelected: null,
    rendered: {},
    open: new Set(),
    folded: new Set(),
    reasons: new Map(),
    busy: new Set(),
    errors: new Map(),
    updated: 0,
    down: "",
    locked: false,
    session: null,
  };

  // -- DOM helpers -------------------------------------------------------------------------

  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "style") Object.assign(el.style, value);
      else if (key === "data") Object.assign(el.dataset, value);
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "value") el.value = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    append(el, kids);
    return el;
  }

  function append(el, kids) {
    for (const kid of kids) {
      if (kid === null || kid === undefined || kid === false) continue;
      if (Array.isArray(kid)) append(el, kid);
      else el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
  }

  function fill(el, ...kids) {
    el.replaceChildren();
    append(el, kids);
  }

  const $ = (id) => document.getElementById(id);

  // -- formatting --------------------------------------------------------------------------

  function ms(value) {
    if (value === 0) return "0";
    if (value < 1) return `${value.toFixed(2)} ms`;
    if (value < 100) return `${value.toFixed(1)} ms`;
    if (value < 1000) return `${Math.round(value)} ms`;
    return `${(value / 1000).toFixed(value < 10000 ? 2 : 1)} s`;
  }

  function clock(epoch, millis) {
    const d = new Date(epoch * 1000);
    const pad = (n, w = 2) => String(n).padStart(w, "0");
    const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return millis ? `${hms}.${pad(d.getMilliseconds(), 3)}` : hms;
  }

  function stamp(epoch) {
    return new Date(epoch * 1000).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
  }

  function ago(epoch) {
    const s = Math.max(0, Date.now() / 1000 - epoch);
    if (s < 5) return "just now";
    if (s < 60) return `${Math.floor(s)} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  function until(epoch) {
    const s = epoch - Date.now() / 1000;
    if (s <= 0) return "expired";
    if (s < 90) return `in ${Math.ceil(s)} s`;
    if (s < 5400) return `in ${Math.round(s / 60)} min`;
    return `in ${Math.round(s / 3600)} h`;
  }

  const Ago = (epoch) => h("span", { data: { ago: epoch }, title: stamp(epoch) }, ago(epoch));
  const Until = (epoch) => h("span", { data: { until: epoch }, title: stamp(epoch) }, until(epoch));

  // Distinct hues, none of them red: red means error.
  const HUES = [212, 262, 168, 32, 292, 190, 140, 322, 236, 54, 276, 200];

  function hue(name) {
    let x = 0x811c9dc5;
    for (const ch of name) x = Math.imul(x ^ ch.codePointAt(0), 0x01000193) >>> 0;
    return HUES[x % HUES.length];
  }

  function AgentChip(name) {
    const c = hue(name);
    const style = {
      background: `hsl(${c} 75% 95%)`,
      color: `hsl(${c} 55% 30%)`,
      borderColor: `hsl(${c} 55% 86%)`,
    };
    return h("span", { class: "agent-chip", style }, name);
  }

  const Badge = (kind, label) => h("span", { class: `badge ${kind}` }, label ?? kind);
  const cssWord = (text) => String(text || "").toLowerCase().replace(/[^a-z0-9_-]/g, "");

  const Dash = () => h("span", { class: "faint" }, "—");

  function Empty(title, text) {
    return h("div", { class: "empty" }, h("strong", {}, title), text);
  }

  // -- data --------------------------------------------------------------------------------

  async function api(path, options) {
    const response = await fetch(path, { cache: "no-store", ...options });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const message = body && (body.error || body.message);
      const error = new Error(message || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  const jsonBody = (value) => ({
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(value),
  });

  function traceQuery() {
    const query = new URLSearchParams({ limit: "100" });
    for (const [key, value] of Object.entries(state.filters)) if (value) query.set(key, value);
    // The status list also offers what failed beside the root: those are filters of their own.
    if (["denied", "errors"].includes(state.filters.status)) {
      query.delete("status");
      query.set(state.filters.status, "true");
    }
    return `/api/traces?${query}`;
  }

  // A span's outcome: OpenTelemetry's unset is ok; the stand-in of a root not arrived (yet) has none.
  const spanOutcome = (node) =>
    node.span_id === "0000000000000000" ? "unset" : node.status === "error" ? "error" : "ok";

  // "ok · 1 denied · 2 errors": how the root call ended (or that spans are still arriving), and what failed beside it.
  function outcomeText(status, denied, errors, inProgress) {
    const parts = [inProgress ? "in progress" : status === "error" ? "error" : "ok"];
    if (denied) parts.push(`${denied} denied`);
    if (errors) parts.push(`${errors} error${errors === 1 ? "" : "s"}`);
    return parts.join(" · ");
  }

  async function refresh() {
    try {
      const wanted = [
        api(state.lapsed ? "/api/agents?all=1" : "/api/agents"),
        api("/api/approvals"),
        state.view === "traces" ? api(traceQuery()) : null,
        state.view === "traces" && state.traceId ? api(`/api/traces/${encodeURIComponent(state.traceId)}`) : null,
        state.view === "map" ? api(`/api/map?since=${encodeURIComponent(state.mapSince)}`) : null,
      ];
      const [agents, approvals, traces, tree, map] = await Promise.all(wanted.map((p) => p && p.catch((e) => e)));
      for (const value of [agents, approvals]) if (value instanceof Error) throw value;
      state.agents = agents;
      state.approvals = approvals;
      if (traces && !(traces instanceof Error)) state.traces = traces;
      state.traceError = traces instanceof Error ? traces.message : "";
      if (state.traceId) state.tree = tree instanceof Error || !tree ? { missing: state.traceId } : tree;
      if (map && !(map instanceof Error)) state.map = map;
      state.mapError = map instanceof Error ? map.message : "";
      state.down = "";
      state.locked = false;
      state.updated = Date.now() / 1000;
    } catch (error) {
      state.locked = error.status === 401;
      if (state.locked) [state.agents, state.approvals, state.traces] = [[], [], []];
      state.down = error instanceof TypeError ? "the registry cannot be reached" : String(error.message || error);
    }
    render();
  }

  // -- rendering ---------------------------------------------------------------------------

  function once(key, data, draw) {
    const json = JSON.stringify(data);
    if (state.rendered[key] === json) return;
    state.rendered[key] = json;
    draw();
  }

  function render() {
    for (const view of VIEWS) {
      $(`view-${view}`).hidden = state.locked || view !== state.view;
    }
    $("view-locked").hidden = !state.locked;
    for (const tab of document.querySelectorAll(".tab")) {
      tab.classList.toggle("active", tab.dataset.view === state.view);
    }
    const pending = state.approvals.filter((a) => a.status === "pending").length;
    $("count-agents").textContent = state.locked ? "" : String(new Set(state.agents.map((a) => a.name)).size);
    $("count-traces").textContent = state.view === "traces" ? String(state.traces.length) : "";
    $("count-approvals").textContent = pending ? String(pending) : "";
    $("count-approvals").classList.toggle("hot", pending > 0);
    document.title = `${pending ? `(${pending}) ` : ""}agentplex · registry`;
    $("banner").hidden = !state.down || state.locked;
    $("banner").textContent = state.down ? `Not updating: ${state.down}. Retrying…` : "";
    renderAccount();
    const live = $("live");
    live.className = `live ${state.down && !state.locked ? "down" : state.live ? "on" : "off"}`;
    $("live-text").textContent = state.live ? "Live" : "Paused";
    if (state.locked) {
      tick();
      return;
    }
    if (state.view === "agents") renderAgents();
    if (state.view === "traces") renderTraces();
    if (state.view === "map") renderMap();
    if (state.view === "approvals") renderApprovals();
    tick();
  }

  function tick() {
    if (state.session && state.session.expires_at <= Date.now() / 1000) {
      state.session = null;
      toast("Your sign-in has expired: sign in again to decide");
      render();
      return;
    }
    for (const el of document.querySelectorAll("[data-ago]")) el.textContent = ago(Number(el.dataset.ago));
    for (const el of document.querySelectorAll("[data-until]")) {
      const left = Number(el.dataset.until) - Date.now() / 1000;
      el.textContent = until(Number(el.dataset.until));
      el.classList.toggle("soon", left < 15);
    }
    if (state.updated) {
      $("live").title = `updated ${clock(state.updated)} · click to ${state.live ? "pause" : "resume"}`;
    }
  }

  // -- agents ------------------------------------------------------------------------------

  function health(record, now) {
    const left = record.expires_at - now;
    if (left <= 0) return "lapsed";
    return left < record.lease_seconds / 2 ? "late" : "healthy";
  }

  function renderAgents() {
    const now = Date.now() / 1000;
    const groups = new Map();
    for (const record of state.agents) {
      if (!groups.has(record.name)) groups.set(record.name, []);
      groups.get(record.name).push(record);
    }
    const names = [...groups.keys()].sort();
    const instances = state.agents.length;
    $("agents-lede").textContent = names.length
      ? `${names.length} agent${names.length === 1 ? "" : "s"}, ${instances} instance${instances === 1 ? "" : "s"}` +
        " registered with this mesh. Health comes from each instance's lease."
      : "The asset inventory: every agent registered with this mesh.";
    const states = state.agents.map((r) => health(r, now));
    once("agents", [state.agents, states], () => drawAgents(groups, names, now));
  }

  function drawAgents(groups, names, now) {
    const body = $("agents-body");
    if (!names.length) {
      fill(body, Empty("No agents registered yet", "Start one with `mesh run echo` and it appears here."));
      return;
    }
    const head = ["Agent", "Instances", "Tools", "Owner", "Jurisdiction", "Data class", "Last seen", "Health"];
    const rows = names.map((name) => AgentRow(name, groups.get(name), now));
    fill(body, h("table", {}, h("thead", {}, h("tr", {}, head.map((t) => h("th", {}, t)))), h("tbody", {}, rows)));
  }

  function AgentRow(name, records, now) {
    const first = records[0];
    const meta = first.metadata || {};
    const tools = new Map();
    for (const record of records) for (const tool of record.tools || []) tools.set(tool.name, tool);
    const states = records.map((r) => health(r, now));
    const alive = states.filter((s) => s !== "lapsed").length;
    const overall = states.includes("healthy") ? "healthy" : states.includes("late") ? "late" : "lapsed";
    const lastSeen = Math.max(...records.map((r) => r.last_seen));
    return h(
      "tr",
      { data: { agent: name } },
      h(
        "td",
        {},
        h("div", { class: "agent-name" }, name),
        meta.description && h("div", { class: "agent-desc" }, meta.description),
      ),
      h(
        "td",
        {},
        records.map((r, i) =>
          h(
            "div",
            { class: "instance", title: `${r.url}${r.version ? ` · version ${r.version}` : ""}` },
            h("span", { class: `dot ${states[i]}` }),
            h("span", { class: "mono" }, r.instance),
            h("span", { class: "url" }, r.url.replace(/^https?:\/\//, "").replace(/\/mcp$/, "")),
          ),
        ),
      ),
      h(
        "td",
        {},
        h(
          "div",
          { class: "chips" },
          [...tools.values()].map((tool) =>
            h("span", { class: "chip", title: tool.description || "" }, tool.name, tool.approval && Badge("approval")),
          ),
          tools.size === 0 && h("span", { class: "faint" }, "none"),
        ),
      ),
      h("td", {}, meta.owner || Dash()),
      h("td", {}, meta.jurisdiction ? h("span", { class: "pill juris" }, meta.jurisdiction) : Dash()),
      h(
        "td",
        {},
        meta.data_class
          ? h("span", { class: `pill ${cssWord(meta.data_class)}` }, meta.data_class)
          : Dash(),
      ),
      h("td", { class: "muted" }, Ago(lastSeen)),
      h(
        "td",
        {},
        h(
          "div",
          { class: "health" },
          Badge(overall, overall),
          h("span", { class: "small muted" }, `${alive}/${records.length} alive`),
        ),
      ),
    );
  }

  // -- traces ------------------------------------------------------------------------------

  function renderTraces() {
    const select = $("filter-agent");
    const known = new Set([...state.agents.map((a) => a.name), ...state.traces.flatMap((t) => t.agents)]);
    if (state.filters.agent) known.add(state.filters.agent);
    once("agent-options", [...known].sort(), () => {
      fill(
        select,
        h("option", { value: "" }, "all agents"),
        [...known].sort().map((name) => h("option", { value: name }, name)),
      );
      select.value = state.filters.agent;
    });
    once("trace-list", [state.traces, state.traceId, state.traceError], drawTraceList);
    once("trace-detail", [state.tree, state.traceId, [...state.open], [...state.folded]], drawTraceDetail);
  }

  function drawTraceList() {
    const list = $("trace-list");
    if (state.traceError) {
      fill(list, Empty("Cannot list traces", state.traceError));
      return;
    }
    if (!state.traces.length) {
      fill(list, Empty("No traces match", "Make a call through the mesh, or widen the filters."));
      return;
    }
    fill(
      list,
      state.traces.map((t) =>
        h(
          "button",
          {
            type: "button",
            class: `trace-item${t.trace_id === state.traceId ? " selected" : ""}`,
            data: { trace: t.trace_id },
            onclick: () => {
              location.hash = `#/traces/${encodeURIComponent(t.trace_id)}`;
            },
          },
          h(
            "div",
            { class: "trace-line" },
            h("span", {
              class: `dot ${t.in_progress ? "late" : cssWord(t.status)}`,
              title: outcomeText(t.status, t.denied, t.errors, t.in_progress),
            }),
            AgentChip(t.root.agent),
            h("span", { class: "trace-tool" }, t.root.tool || "(no tool)"),
            h("span", { class: "trace-dur" }, ms(t.duration_ms)),
          ),
          h(
            "div",
            { class: "trace-line trace-meta" },
            h("span", { class: "trace-outcome" }, outcomeText(t.status, t.denied, t.errors, t.in_progress)),
            h("span", { class: "mono", title: t.trace_id }, t.trace_id.slice(0, 8)),
            h("span", {}, `${t.span_count} span${t.span_count === 1 ? "" : "s"}`),
            h("span", {}, `${t.agents.length} agent${t.agents.length === 1 ? "" : "s"}`),
            h("span", { class: "right" }, Ago(t.start)),
          ),
        ),
      ),
    );
  }

  function drawTraceDetail() {
    const pane = $("trace-detail");
    const tree = state.tree;
    if (!state.traceId) {
      fill(pane, Empty("Select a trace", "Its spans, timings and decisions appear here as a waterfall."));
      return;
    }
    if (!tree || tree.missing) {
      const gone = `No spans of ${state.traceId} are stored.`;
      fill(pane, tree ? Empty("Trace not found", gone) : Empty("Loading trace…", ""));
      return;
    }
    const nodes = [];
    (function walk(node, depth) {
      nodes.push([node, depth]);
      for (const child of node.children) walk(child, depth + 1);
    })(tree.root, 0);
    const t0 = Math.min(...nodes.map(([n]) => n.start));
    const t1 = Math.max(...nodes.map(([n]) => n.end));
    const total = Math.max(t1 - t0, 1e-6);
    const root = tree.root;
    const tool = root.attributes["gen_ai.tool.name"];
    const agents = new Set(nodes.map(([n]) => n.agent));
    const spans = tree.span_count || nodes.length;
    const decisions = nodes.reduce((sum, [n]) => sum + n.decisions.length, 0);
    const status = spanOutcome(root); // the trace's: its root's outcome
    const head = h(
      "div",
      { class: "detail-head" },
      h(
        "div",
        { class: "detail-title" },
        AgentChip(root.agent),
        h("h2", {}, tool ? String(tool) : root.name),
        status !== "unset" && Badge(cssWord(status), status),
        tree.denied > 0 && Badge("denied", `${tree.denied} denied`),
        tree.errors > 0 && Badge("error", `${tree.errors} error${tree.errors === 1 ? "" : "s"}`),
        tree.in_progress ? Badge("pending", "in progress") : tree.complete ? Badge("complete") : Badge("incomplete"),
      ),
      h(
        "div",
        { class: "detail-facts" },
        h("span", {}, "trace ", h("b", { class: "mono" }, tree.trace_id)),
        h("span", {}, "started ", h("b", { title: stamp(t0) }, clock(t0, true))),
        h("span", {}, "duration ", h("b", {}, ms(total * 1000))),
        h("span", {}, h("b", {}, String(spans)), ` span${spans === 1 ? "" : "s"}`),
        h("span", {}, h("b", {}, String(agents.size)), ` agent${agents.size === 1 ? "" : "s"}`),
        h("span", {}, h("b", {}, String(decisions)), ` decision${decisions === 1 ? "" : "s"}`),
      ),
    );
    const callout =
      !tree.complete &&
      !tree.in_progress &&
      h(
        "div",
        { class: "callout" },
        h("strong", {}, "This trace is incomplete"),
        h(
          "ul",
          {},
          (tree.incomplete_reasons.length ? tree.incomplete_reasons : ["some spans are missing"]).map((r) =>
            h("li", {}, r),
          ),
        ),
      );
    const rows = [Axis(total)];
    const hidden = new Set();
    for (const [node, depth] of nodes) {
      if (node.parent_id && hidden.has(node.parent_id)) {
        hidden.add(node.span_id);
        continue;
      }
      if (state.folded.has(node.span_id)) hidden.add(node.span_id);
      rows.push(...SpanRows(node, depth, t0, total));
    }
    fill(pane, head, callout, h("div", { class: "waterfall", role: "tree" }, rows));
  }

  function Axis(total) {
    const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) =>
      h(
        "div",
        { class: `tick${f === 1 ? " last" : ""}`, style: { left: `${f * 100}%` } },
        h("span", {}, ms(f * total * 1000)),
      ),
    );
    return h(
      "div",
      { class: "wf-row wf-axis" },
      h("div", { class: "wf-label" }, "Span"),
      h("div", { class: "wf-track" }, ticks),
    );
  }

  function Grid() {
    return [0.25, 0.5, 0.75].map((f) => h("div", { class: "tick", style: { left: `${f * 100}%` } }));
  }

  function SpanRows(node, depth, t0, total) {
    const indent = { paddingLeft: `${22 + depth * 20}px` };
    const left = ((node.start - t0) / total) * 100;
    const width = Math.max(((node.end - node.start) / total) * 100, 0);
    const open = state.open.has(node.span_id);
    const folded = state.folded.has(node.span_id);
    const toggle = (set, id) => (set.has(id) ? set.delete(id) : set.add(id));
    const fold = h(
      "button",
      {
        type: "button",
        class: `fold${node.children.length ? "" : " leaf"}`,
        title: folded ? "show children" : "hide children",
        "aria-label": folded ? "show children" : "hide children",
        onclick: (event) => {
          event.stopPropagation();
          toggle(state.folded, node.span_id);
          drawAgain();
        },
      },
      folded ? "▶" : "▼",
    );
    const bar = { left: `${left}%`, width: `${width}%` };
    if (node.status !== "error") bar.background = `hsl(${hue(node.agent)} 45% 62%)`;
    const inside = left + width > 78 && width > 14;
    const before = left + width > 78 && !inside;
    let where = { left: `${left + width}%` };
    if (inside) where = { right: `${100 - left - width}%` };
    else if (before) where = { right: `${100 - left}%` };
    const row = h(
      "div",
      {
        class: `wf-row span-row${open ? " open" : ""}`,
        role: "treeitem",
        "aria-expanded": open ? "true" : "false",
        data: { span: node.span_id, agent: node.agent },
        title: "show attributes",
        tabindex: "0",
        onclick: () => {
          toggle(state.open, node.span_id);
          drawAgain();
          focusSpan(node.span_id);
        },
        onkeydown: (event) => {
          if (event.target !== event.currentTarget || (event.key !== "Enter" && event.key !== " ")) return;
          event.preventDefault();
          event.currentTarget.click();
        },
      },
      h(
        "div",
        { class: "wf-label", style: indent },
        fold,
        h("span", { class: `dot ${cssWord(spanOutcome(node))}`, title: `status: ${spanOutcome(node)}` }),
        AgentChip(node.agent),
        h("span", { class: "span-name", title: node.name }, node.name),
        h("span", { class: "kind" }, node.kind),
        node.orphan && Badge("orphan"),
        node.skew_ms ? Badge("skew", `skew ${node.skew_ms > 0 ? "+" : ""}${node.skew_ms.toFixed(1)} ms`) : null,
      ),
      h(
        "div",
        { class: "wf-track" },
        Grid(),
        h("div", { class: `bar ${cssWord(node.status)}`, style: bar }),
        h("span", { class: `bar-label${inside ? " inside" : ""}`, style: where }, ms((node.end - node.start) * 1000)),
      ),
    );
    const notes = [];
    const noteIndent = { paddingLeft: `${22 + (depth + 1) * 20 + 4}px` };
    for (const decision of node.decisions) notes.push(Note(DecisionLine(decision), noteIndent));
    if (node.status === "error" && node.status_message) {
      notes.push(Note(h("div", { class: "status-msg" }, `✗ ${node.status_message}`), noteIndent));
    }
    if (open) notes.push(Note(Attributes(node), noteIndent));
    return [row, ...notes];
  }

  function Note(content, indent) {
    return h("div", { class: "note-row", style: indent }, content);
  }

  function DecisionLine(d) {
    const alternatives = (d.alternatives || []).filter((a) => a !== d.choice);
    return h(
      "div",
      { class: `decision ${cssWord(d.choice)}`, data: { kind: d.kind } },
      h("span", { class: "decision-mark" }, "◆"),
      h(
        "span",
        {},
        h("span", { class: "decision-kind" }, d.kind),
        typeof d.choice === "string" && [" → ", h("span", { class: "choice" }, d.choice)],
        typeof d.confidence === "number" && h("span", { class: "conf" }, ` (${d.confidence.toFixed(2)})`),
        d.reason && `: ${d.reason}`,
        alternatives.length > 0 && h("span", { class: "alts" }, `; alternatives: ${alternatives.join(", ")}`),
      ),
    );
  }

  function Attributes(node) {
    const facts = [
      ["span_id", node.span_id],
      ["parent_id", node.parent_id ?? "—"],
      ["start", `${stamp(node.start)} (${clock(node.start, true)})`],
      ["duration", ms((node.end - node.start) * 1000)],
      ["status", spanOutcome(node) + (node.status_message ? `: ${node.status_message}` : "")],
      ...Object.entries(node.attributes).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]),
    ];
    return h("dl", { class: "attrs" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  function focusSpan(spanId) {
    const row = document.querySelector(`.span-row[data-span="${CSS.escape(spanId)}"]`);
    if (row) row.focus({ preventScroll: true });
  }

  function drawAgain() {
    once("trace-detail", [state.tree, state.traceId, [...state.open], [...state.folded]], drawTraceDetail);
  }

  // -- map ---------------------------------------------------------------------------------

  // Agents as nodes in columns (a caller left of what it calls, one jurisdiction after another
  // in a column), calls as edges drawn from the registry's /api/map over the chosen window.
  const SVG_NS = "http://www.w3.org/2000/svg";
  const NODE_W = 168;
  const NODE_H = 50;
  const COL_GAP = 300;
  const ROW_GAP = 78;
  const PAD = 36;
  const IDLE_ROWS = 6;

  function svg(tag, attrs, ...kids) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "data") for (const [k, v] of Object.entries(value)) el.setAttribute(`data-${k}`, String(v));
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, String(value));
    }
    append(el, kids);
    return el;
  }

  const edgeKey = (e) => `${e.source}\u2192${e.target}`;
  const percent = (part, whole) => (whole ? `${Math.round((100 * part) / whole)}%` : "0%");
  const cut = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

  function rate(calls, seconds) {
    const perSecond = calls / Math.max(seconds, 1);
    if (perSecond >= 1) return `${perSecond.toFixed(perSecond < 10 ? 1 : 0)}/s`;
    const perMinute = perSecond * 60;
    return perMinute >= 1 ? `${perMinute.toFixed(perMinute < 10 ? 1 : 0)}/min` : `${calls} in window`;
  }

  function layout(nodes, edges) {
    const names = nodes.map((n) => n.name);
    const linked = new Set(edges.flatMap((e) => [e.source, e.target]));
    const column = new Map(names.filter((n) => linked.has(n)).map((n) => [n, 0]));
    // Longest path from the callers; a cycle stops growing once a column passes the node count.
    for (let round = 0; round < names.length; round += 1) {
      let moved = false;
      for (const e of edges) {
        const next = column.get(e.source) + 1;
        if (e.source !== e.target && next < names.length && column.get(e.target) < next) {
          column.set(e.target, next);
          moved = true;
        }
      }
      if (!moved) break;
    }
    const byName = new Map(nodes.map((n) => [n.name, n]));
    const columns = [];
    for (const [name, at] of column) (columns[at] = columns[at] || []).push(name);
    const idle = names.filter((n) => !linked.has(n));
    for (let i = 0; i < idle.length; i += IDLE_ROWS) columns.push(idle.slice(i, i + IDLE_ROWS));
    const row = new Map();
    const juris = (name) => byName.get(name).jurisdiction || "~";
    columns.forEach((names, at) => {
      const callers = (name) =>
        edges.filter((e) => e.target === name && row.has(e.source)).map((e) => row.get(e.source));
      const centre = (name) => {
        const seen = callers(name);
        return seen.length ? seen.reduce((a, b) => a + b, 0) / seen.length : 0;
      };
      names.sort((a, b) => juris(a).localeCompare(juris(b)) || (at ? centre(a) - centre(b) : 0) || a.localeCompare(b));
      names.forEach((name, i) => row.set(name, i));
    });
    const tallest = Math.max(1, ...columns.map((c) => c.length));
    // Room above the nodes for the arcs of calls that skip a column (MapEdge draws them over the top).
    const arcs = edges.some((e) => column.get(e.target) - column.get(e.source) > 1) ? ROW_GAP * 0.6 : 0;
    const place = new Map();
    columns.forEach((names, at) => {
      const top = PAD + arcs + ((tallest - names.length) * ROW_GAP) / 2;
      names.forEach((name, i) => place.set(name, { x: PAD + at * COL_GAP, y: top + i * ROW_GAP, column: at }));
    });
    const width = PAD * 2 + Math.max(0, columns.length - 1) * COL_GAP + NODE_W;
    const height = PAD * 2 + arcs + (tallest - 1) * ROW_GAP + NODE_H;
    return { place, width, height };
  }

  function renderMap() {
    const m = state.map;
    const windowS = m ? m.until - m.since : 0;
    $("map-lede").textContent = m
      ? `${m.nodes.length} node${m.nodes.length === 1 ? "" : "s"} and ${m.edges.length} edge${m.edges.length === 1 ? "" : "s"}` +
        ` from ${m.traces} trace${m.traces === 1 ? "" : "s"} of the last ${state.mapSince}.` +
        " Click an edge for its traces."
      : "Who calls whom: agents as nodes, calls as edges, from the traces of the window.";
    const shape = m ? [m.nodes, m.edges, Math.round(windowS / 60)] : [state.mapError];
    once("map", [shape, state.mapSelected], drawMap);
    once("map-side", [shape, state.mapSelected], drawMapSide);
  }

  function drawMap() {
    const body = $("map-body");
    const m = state.map;
    if (state.mapError && !m) {
      fill(body, Empty("Cannot draw the map", state.mapError));
      return;
    }
    if (!m) {
      fill(body, Empty("Loading the map…", ""));
      return;
    }
    if (!m.nodes.length) {
      fill(body, Empty("Nothing to draw yet", "Start agents (`mesh up`, `mesh run echo`) and make a call."));
      return;
    }
    const { place, width, height } = layout(m.nodes, m.edges);
    const markers = ["ok", "failing", "denied"].map((kind) =>
      svg(
        "marker",
        {
          id: `arrow-${kind}`,
          viewBox: "0 0 10 10",
          refX: "9",
          refY: "5",
          markerWidth: "9",
          markerHeight: "9",
          markerUnits: "userSpaceOnUse",
          orient: "auto-start-reverse",
          class: `arrow ${kind}`,
        },
        svg("path", { d: "M0,0 L10,5 L0,10 z" }),
      ),
    );
    const edges = m.edges.map((e) => MapEdge(e, place, m.until - m.since));
    const nodes = m.nodes.map((n) => MapNode(n, place.get(n.name)));
    const picture = svg(
      "svg",
      {
        id: "map-svg",
        viewBox: `0 0 ${width} ${height}`,
        role: "img",
        "aria-label": "map of the mesh",
      },
      svg("defs", {}, markers),
      svg("g", { class: "edges" }, edges),
      svg("g", { class: "nodes" }, nodes),
    );
    picture.style.maxWidth = `${width}px`; // scaled down to fit, never up
    fill(body, h("div", { class: "map-scroll" }, picture), MapLegend());
  }

  function MapEdge(e, place, windowS) {
    const a = place.get(e.source);
    const b = place.get(e.target);
    const kind = e.denied ? "denied" : e.errors ? "failing" : "ok";
    let d;
    let mid;
    if (e.source === e.target) {
      const x = a.x + NODE_W;
      const y = a.y + NODE_H / 2;
      d = `M${x},${y - 10} C${x + 60},${y - 50} ${x + 60},${y + 50} ${x},${y + 10}`;
      mid = { x: x + 46, y };
    } else if (b.column === a.column + 1) {
      const [x1, y1, x2, y2] = [a.x + NODE_W, a.y + NODE_H / 2, b.x, b.y + NODE_H / 2];
      const bend = Math.max(40, (x2 - x1) / 2);
      d = `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`;
      mid = { x: (x1 + x2) / 2, y: (y1 + y2) / 2 };
    } else if (b.column > a.column) {
      // Over every node, not through the columns between: leave the top, arc in the room `layout`
      // keeps above the nodes (peaking at PAD + 8), land on the top.
      const [x1, y1, x2, y2] = [a.x + NODE_W - 24, a.y, b.x + 24, b.y];
      const peak = PAD + 8;
      const control = (8 * peak - y1 - y2) / 6; // a cubic's midpoint is (P0 + 3 P1 + 3 P2 + P3) / 8
      d = `M${x1},${y1} C${x1 + 40},${control} ${x2 - 40},${control} ${x2},${y2}`;
      mid = { x: (x1 + x2) / 2, y: peak + 30 };
    } else {
      // Backwards or within a column: leave and enter on the right, bulging out.
      const [x1, y1, x2, y2] = [a.x + NODE_W, a.y + NODE_H / 2 + 8, b.x + NODE_W, b.y + NODE_H / 2 - 8];
      const out = Math.max(x1, x2) + 70;
      d = `M${x1},${y1} C${out},${y1} ${out},${y2} ${x2},${y2}`;
      mid = { x: (x1 + 3 * out + 3 * out + x2) / 8, y: (y1 + y2) / 2 };
    }
    const key = edgeKey(e);
    const selected = state.mapSelected === `edge:${key}`;
    const calls = `${e.calls} call${e.calls === 1 ? "" : "s"}`;
    const lines = e.denied
      ? [`${e.denied} denied`, e.policies.join(", ") || "by policy"]
      : [`${calls} · ${percent(e.errors, e.calls)} err`, `p99 ${ms(e.p99_ms)}`];
    const label = lines.join(" · ");
    const pick = () => {
      state.mapSelected = selected ? null : `edge:${key}`;
      renderMap();
    };
    return svg(
      "g",
      {
        class: `map-edge ${kind}${selected ? " selected" : ""}`,
        data: { source: e.source, target: e.target },
        tabindex: "0",
        role: "button",
        "aria-label": `${e.source} calls ${e.target}: ${label}`,
        onclick: pick,
        onkeydown: (event) => {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            pick();
          }
        },
      },
      svg("title", {}, `${e.source} → ${e.target}: ${calls} (${rate(e.calls, windowS)}), ${label}`),
      svg("path", { class: "edge-hit", d }),
      svg("path", {
        class: "edge-line",
        d,
        "stroke-width": String(1.5 + Math.min(4, Math.log2(e.calls))),
        "marker-end": `url(#arrow-${kind})`,
      }),
      svg(
        "text",
        { class: "edge-label", x: String(mid.x), y: String(mid.y - 19), "text-anchor": "middle" },
        lines.map((line, i) => svg("tspan", { x: String(mid.x), dy: i ? "13" : "0" }, line)),
      ),
    );
  }

  function MapNode(n, at) {
    const facts =
      n.state === "outside"
        ? "outside the inventory"
        : [n.jurisdiction ? n.jurisdiction.toUpperCase() : "no jurisdiction", n.owner || "no owner"].join(" · ");
    const selected = state.mapSelected === `node:${n.name}`;
    const governed = n.state === "outside" || n.governed ? "" : " ungoverned";
    return svg(
      "g",
      {
        class: `map-node ${n.state}${governed}${selected ? " selected" : ""}`,
        data: { node: n.name },
        transform: `translate(${at.x},${at.y})`,
        tabindex: "0",
        role: "button",
        "aria-label": `${n.name}: ${n.state}`,
        onclick: () => {
          state.mapSelected = selected ? null : `node:${n.name}`;
          renderMap();
        },
      },
      svg("title", {}, `${n.name} · ${n.state}${n.instances ? ` · ${n.instances} instance(s)` : ""} · ${facts}`),
      svg("rect", { class: "node-box", width: String(NODE_W), height: String(NODE_H), rx: "10" }),
      svg("circle", { class: "node-dot", cx: "16", cy: "18", r: "5" }),
      svg("text", { class: "node-name", x: "28", y: "22" }, cut(n.name, n.instances > 1 ? 14 : 17)),
      n.instances > 1 && svg("text", { class: "node-count", x: String(NODE_W - 12), y: "22", "text-anchor": "end" }, `×${n.instances}`),
      svg("text", { class: "node-facts", x: "16", y: "39" }, cut(facts, 24)),
      n.approval_tools.length > 0 &&
        svg(
          "g",
          { class: "node-approval", transform: `translate(${NODE_W - 14},0)` },
          svg("title", {}, `needs a person's approval: ${n.approval_tools.join(", ")}`),
          svg("circle", { cx: "0", cy: "0", r: "9" }),
          svg("text", { x: "0", y: "4", "text-anchor": "middle" }, "A"),
        ),
    );
  }

  function MapLegend() {
    const item = (cls, text) => h("span", { class: "legend-item" }, h("span", { class: `legend-mark ${cls}` }), text);
    return h(
      "div",
      { class: "map-legend" },
      item("healthy", "healthy"),
      item("late", "lease late"),
      item("lapsed", "lapsed"),
      item("outside", "outside the inventory"),
      item("ungoverned", "no owner"),
      item("edge-ok", "calls"),
      item("edge-failing", "with errors"),
      item("edge-denied", "denied by policy"),
      item("approval", "needs approval"),
    );
  }

  function drawMapSide() {
    const side = $("map-side");
    const m = state.map;
    const chosen = state.mapSelected || "";
    const windowS = m ? m.until - m.since : 0;
    const edge = m && chosen.startsWith("edge:") ? m.edges.find((e) => `edge:${edgeKey(e)}` === chosen) : null;
    const node = m && chosen.startsWith("node:") ? m.nodes.find((n) => `node:${n.name}` === chosen) : null;
    if (edge) {
      fill(side, EdgeFacts(edge, windowS));
      return;
    }
    if (node) {
      fill(side, NodeFacts(node, m.edges));
      return;
    }
    fill(side, Empty("Select an edge or an agent", "An edge lists its calls' latest traces; an agent, its facts."));
  }

  function EdgeFacts(e, windowS) {
    const facts = [
      ["calls", `${e.calls} (${rate(e.calls, windowS)})`],
      ["errors", `${e.errors} (${percent(e.errors, e.calls)})`],
      ["denied", e.denied ? `${e.denied} by ${e.policies.join(", ") || "policy"}` : "none"],
      ["latency", `p50 ${ms(e.p50_ms)} · p99 ${ms(e.p99_ms)}`],
      ["tools", Object.entries(e.tools).map(([t, n]) => `${t} ×${n}`).join(", ") || "—"],
      ["last call", stamp(e.last)],
    ];
    return h(
      "div",
      { class: "map-facts", data: { edge: edgeKey(e) } },
      h("div", { class: "detail-title" }, AgentChip(e.source), "→", AgentChip(e.target)),
      h("dl", { class: "attrs" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      h(
        "div",
        { class: "edge-list" },
        h("h2", { class: "section-title" }, "Latest traces"),
        h(
          "div",
          { class: "edge-traces" },
          e.traces.map((id) =>
            h("a", { class: "mono edge-trace", href: `#/traces/${encodeURIComponent(id)}`, data: { trace: id } }, id),
          ),
        ),
      ),
    );
  }

  function NodeFacts(n, edges) {
    const out = edges.filter((e) => e.source === n.name);
    const into = edges.filter((e) => e.target === n.name);
    const facts = [
      ["state", n.state],
      ["instances", String(n.instances)],
      ["owner", n.owner || (n.state === "outside" ? "—" : "none (ungoverned)")],
      ["jurisdiction", n.jurisdiction || "—"],
      ["data class", n.data_class || "—"],
      ["approval", n.approval_tools.join(", ") || "no tool needs one"],
      ["calls", out.map((e) => `${e.target} (${e.calls})`).join(", ") || "—"],
      ["called by", into.map((e) => `${e.source} (${e.calls})`).join(", ") || "—"],
    ];
    return h(
      "div",
      { class: "map-facts", data: { node: n.name } },
      h("div", { class: "detail-title" }, AgentChip(n.name), Badge(cssWord(n.state), n.state)),
      h("dl", { class: "attrs" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    );
  }

  // -- approvals ---------------------------------------------------------------------------

  function renderApprovals() {
    const pending = state.approvals.filter((a) => a.status === "pending");
    const done = state.approvals.filter((a) => a.status !== "pending");
    once("pending", [pending, [...state.busy], [...state.errors], state.session], () => drawPending(pending));
    once("history", done, () => drawHistory(done));
  }

  function Call(a) {
    return [AgentChip(a.agent), h("span", {}, a.tool)];
  }

  const deciders = (a) => (a.approvers && a.approvers.length ? a.approvers.join(", ") : "any approver");

  function Decider(by) {
    if (!by) return Dash();
    if (typeof by === "string") return by;
    const groups = by.groups && by.groups.length ? by.groups.join(", ") : "";
    return h("span", { class: "decider" }, h("b", {}, by.person), groups && h("span", { class: "muted" }, ` · ${groups}`));
  }

  function drawPending(pending) {
    const box = $("approvals-pending");
    if (!pending.length) {
      const empty = Empty("Nothing is waiting", "Calls that need a person's approval appear here.");
      fill(box, h("div", { class: "card" }, empty));
      return;
    }
    fill(box, h("div", { class: "approval-list" }, pending.map(PendingCard)));
  }

  function PendingCard(a) {
    const busy = state.busy.has(a.id);
    const signedIn = Boolean(state.session);
    const input = h("input", {
      type: "text",
      placeholder: "Reason (optional)",
      maxlength: "500",
      "aria-label": "reason",
      value: state.reasons.get(a.id) || "",
      disabled: !signedIn,
      oninput: (event) => state.reasons.set(a.id, event.target.value),
    });
    const error = state.errors.get(a.id);
    return h(
      "div",
      { class: "card approval-card", data: { approval: a.id } },
      h(
        "div",
        {},
        h("div", { class: "pending-call" }, Call(a), Badge("pending")),
        h(
          "div",
          { class: "pending-facts" },
          h("span", {}, "caller ", h("b", {}, a.caller)),
          a.requested_by && h("span", { class: "requested-by" }, "on behalf of ", h("b", {}, a.requested_by)),
          h("span", { class: "approvers" }, "decided by ", h("b", {}, deciders(a))),
          h("span", {}, "requested ", h("b", {}, Ago(a.requested_at))),
          h("span", {}, "expires ", h("b", {}, Until(a.expires_at))),
          h(
            "span",
            { title: `arguments digest ${a.arguments_digest}` },
            "arguments ",
            h("b", { class: "mono" }, `${a.arguments_digest.slice(0, 12)}…`),
          ),
          a.trace_id && h("a", { href: `#/traces/${encodeURIComponent(a.trace_id)}` }, "view trace →"),
        ),
        a.arguments && CallArguments(a.arguments),
        error && h("div", { class: "form-error", role: "alert" }, error),
      ),
      h(
        "div",
        { class: "pending-side" },
        h(
          "div",
          { class: "pending-actions" },
          input,
          Action("approve", "Approve", busy, signedIn, () => decide(a, "approve")),
          Action("deny", "Deny", busy, signedIn, () => decide(a, "deny")),
        ),
        !signedIn && h("div", { class: "hint" }, "Sign in with your approver token to decide."),
      ),
    );
  }

  // The call's arguments as the agent filed them (shown to approvers only); the agent already
  // replaced the values of secret fields with "***" (mesh.masking), which read as masked here.
  const MASKED = "***";

  function flatten(value, prefix = "") {
    return Object.entries(value).flatMap(([key, v]) =>
      v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length
        ? flatten(v, `${prefix}${key}.`)
        : [[`${prefix}${key}`, v]],
    );
  }

  function CallArguments(args) {
    const entries = flatten(args);
    if (!entries.length) return h("div", { class: "call-args empty-args" }, "no arguments");
    return h(
      "dl",
      { class: "call-args", "aria-label": "arguments" },
      entries.map(([key, value]) => [
        h("dt", {}, key),
        value === MASKED
          ? h("dd", { class: "masked", title: "a secret field: its value is not shown" }, "•••••• secret")
          : h("dd", { data: { arg: key } }, typeof value === "string" ? value : JSON.stringify(value)),
      ]),
    );
  }

  function Action(kind, label, busy, signedIn, onclick) {
    const title = signedIn ? null : "sign in to decide";
    const cls = `btn ${kind}${signedIn ? "" : " locked"}`;
    return h("button", { type: "button", class: cls, disabled: busy || !signedIn, title, onclick }, label);
  }

  function drawHistory(done) {
    const box = $("approvals-history");
    if (!done.length) {
      fill(box, Empty("No decisions yet", "Approved, denied and expired requests are kept here as the audit record."));
      return;
    }
    const head = ["Status", "Call", "Caller", "On behalf of", "Requested", "Decided by", "Decided", "Reason"];
    const rows = done.map((a) =>
      h(
        "tr",
        { data: { approval: a.id } },
        h("td", {}, Badge(cssWord(a.status), a.status)),
        h("td", {}, h("div", { class: "trace-line" }, Call(a))),
        h("td", {}, a.caller),
        h("td", {}, a.requested_by || Dash()),
        h("td", { class: "muted", title: stamp(a.requested_at) }, clock(a.requested_at)),
        h("td", { class: "decided-by" }, Decider(a.decided_by)),
        h("td", { class: "muted" }, a.decided_at ? Ago(a.decided_at) : "—"),
        h("td", {}, a.reason || Dash()),
      ),
    );
    fill(box, h("table", {}, h("thead", {}, h("tr", {}, head.map((t) => h("th", {}, t)))), h("tbody", {}, rows)));
  }

  async function decide(approval, decision) {
    state.busy.add(approval.id);
    state.errors.delete(approval.id);
    render();
    const reason = (state.reasons.get(approval.id) || "").trim();
    try {
      const path = `/ui/approvals/${encodeURIComponent(approval.id)}/decision`;
      await api(path, { method: "POST", ...jsonBody({ decision, reason: reason || null }) });
      state.reasons.delete(approval.id);
      const verb = decision === "approve" ? "Approved" : "Denied";
      toast(`${verb} ${approval.agent}.${approval.tool} for ${approval.caller}`);
    } catch (error) {
      if (error.status === 401) state.session = null;
      state.errors.set(approval.id, `Could not record the decision: ${error.message}`);
    } finally {
      state.busy.delete(approval.id);
    }
    await refresh();
  }

  // -- signing in --------------------------------------------------------------------------

  function whoText(session) {
    const groups = session.groups.length ? session.groups.join(", ") : session.role;
    return `${session.person} · ${groups}`;
  }

  function renderAccount() {
    const session = state.session;
    $("who").hidden = !session;
    $("who-text").textContent = session ? whoText(session) : "";
    if (session) $("who").title = `signed in as ${session.person} (${session.role}) until ${stamp(session.expires_at)}`;
    $("signout").hidden = !session;
    $("signin-open").hidden = Boolean(session);
    if (session) $("signin-form").hidden = true;
    $("signin-open").setAttribute("aria-expanded", String(!$("signin-form").hidden));
  }

  function showSignIn(open) {
    $("signin-form").hidden = !open;
    $("signin-error").hidden = true;
    $("signin-token").value = "";
    renderAccount();
    if (open) $("signin-token").focus();
  }

  async function loadSession() {
    try {
      state.session = await api("/ui/session");
    } catch {
      state.session = null;
    }
    render();
  }

  async function signIn(event) {
    event.preventDefault();
    const field = $("signin-token");
    const token = field.value.trim();
    if (!token) return;
    try {
      state.session = await api("/ui/session", { method: "POST", ...jsonBody({ token }) });
      field.value = "";
      state.errors.clear();
      showSignIn(false);
      toast(`Signed in as ${whoText(state.session)}`);
    } catch (error) {
      $("signin-error").textContent = `Could not sign in: ${error.message}`;
      $("signin-error").hidden = false;
    }
    await refresh();
  }

  async function signOut() {
    try {
      await api("/ui/session", { method: "DELETE" });
      state.session = null;
      toast("Signed out");
    } catch (error) {
      toast(`Could not sign out: ${error.message}`);
    }
    await refresh();
  }

  let toastTimer = 0;
  function toast(message) {
    const el = $("toast");
    el.textContent = message;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (el.hidden = true), 3500);
  }

  // -- routing and wiring ------------------------------------------------------------------

  function route() {
    const [view, id] = location.hash.replace(/^#\/?/, "").split("/");
    state.view = VIEWS.includes(view) ? view : "agents";
    const traceId = state.view === "traces" && id ? decodeURIComponent(id) : null;
    if (traceId !== state.traceId) {
      state.traceId = traceId;
      state.tree = null;
      state.open.clear();
      state.folded.clear();
    }
    render();
    refresh();
  }

  function wire() {
    window.addEventListener("hashchange", route);
    const filters = { agent: "filter-agent", status: "filter-status", since: "filter-since" };
    for (const [key, id] of Object.entries(filters)) {
      $(id).value = state.filters[key];
      $(id).addEventListener("change", (event) => {
        state.filters[key] = event.target.value;
        refresh();
      });
    }
    $("trace-filters").addEventListener("submit", (event) => event.preventDefault());
    $("map-filters").addEventListener("submit", (event) => event.preventDefault());
    $("map-since").value = state.mapSince;
    $("map-since").addEventListener("change", (event) => {
      state.mapSince = event.target.value;
      refresh();
    });
    $("show-lapsed").addEventListener("change", (event) => {
      state.lapsed = event.target.checked;
      refresh();
    });
    $("live").addEventListener("click", () => {
      state.live = !state.live;
      if (state.live) refresh();
      else render();
    });
    setInterval(() => {
      if (state.live && !document.hidden) refresh();
    }, REFRESH_MS);
    setInterval(tick, 1000);
    $("signin-open").addEventListener("click", () => showSignIn($("signin-form").hidden));
    $("signin-cancel").addEventListener("click", () => showSignIn(false));
    $("locked-signin").addEventListener("click", () => showSignIn(true));
    $("signin-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", signOut);
    loadSession();
    api("/healthz")
      .then((health) => {
        $("mesh-name").textContent = `mesh ${health.mesh}`;
      })
      .catch(() => {
        $("mesh-name").hidden = true;
      });
    route();
  }

  wire();
})();
