// The phactor devserver's live event viewer. Plain JavaScript, no dependencies.
// Everything shown comes from the server's JSON API and goes into the DOM as text
// (textContent / text nodes, never HTML): event names and properties are untrusted input.
"use strict";

(function () {
  const PAGE = 100; // events fetched per page
  const KEEP = 1000; // rows kept in the table at most
  const POLL_MS = 1000;

  const $ = (id) => document.getElementById(id);
  const state = { rows: [], newest: 0, oldest: null, selected: null, generation: 0 };

  // el("td", {class: "x"}, "text", child...): strings become text nodes, never markup.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") node.className = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function mask(key) {
    if (key === null || key === undefined) return "(no key)";
    const text = String(key);
    return text.length <= 10 ? text.slice(0, 3) + "…" : text.slice(0, 6) + "…" + text.slice(-4);
  }

  function short(value, max) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    return text === undefined ? "" : text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  function filters() {
    const params = {};
    const pairs = [["project", "f-project"], ["event", "f-event"], ["distinct_id", "f-distinct"], ["q", "f-q"]];
    for (const [name, id] of pairs) {
      const value = $(id).value.trim();
      if (value) params[name] = value;
    }
    return params;
  }

  async function api(path, params) {
    const query = new URLSearchParams(params || {}).toString();
    const response = await fetch(path + (query ? "?" + query : ""), { cache: "no-store" });
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  // -- the table ---------------------------------------------------------------------------

  function when(event) {
    const text = event.timestamp || event.received_at || "";
    const date = new Date(text);
    if (isNaN(date.getTime())) return short(text, 24);
    const pad = (n, w) => String(n).padStart(w || 2, "0");
    return pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds()) +
      "." + pad(date.getMilliseconds(), 3);
  }

  function someProperties(event) {
    const props = event.properties || {};
    if (event.event === "$exception" && Array.isArray(props.$exception_list) && props.$exception_list[0]) {
      const first = props.$exception_list[0];
      return short(first.type + ": " + first.value, 120);
    }
    if (event.event === "$feature_flag_called") {
      return short(props.$feature_flag, 40) + " = " + short(props.$feature_flag_response, 40);
    }
    const keys = Object.keys(props).filter((k) => !k.startsWith("$")).slice(0, 4);
    return keys.map((k) => k + "=" + short(props[k], 40)).join("  ");
  }

  function row(event) {
    const tr = el("tr", { "data-id": event.id, class: event.event === "$exception" ? "exception" : "" },
      el("td", {}, when(event)),
      el("td", { class: "name" }, short(event.event, 80)),
      el("td", {}, short(event.distinct_id, 60)),
      el("td", { title: "project (api key, masked)" }, mask(event.api_key)),
      el("td", { class: "props" }, someProperties(event)));
    tr.addEventListener("click", () => show(event, tr));
    return tr;
  }

  function render() {
    const body = $("rows");
    clear(body);
    for (const event of state.rows) {
      const tr = row(event);
      if (state.selected === event.id) tr.classList.add("selected");
      body.appendChild(tr);
    }
    $("empty").hidden = state.rows.length > 0;
  }

  function prepend(events) {
    const body = $("rows");
    const anchor = body.firstChild; // the newest row shown so far (null: none)
    for (const event of events) body.insertBefore(row(event), anchor); // they come newest first
    state.rows = events.concat(state.rows);
    while (state.rows.length > KEEP) {
      state.rows.pop();
      body.removeChild(body.lastChild);
    }
    if (state.rows.length) state.oldest = state.rows[state.rows.length - 1].id;
    $("empty").hidden = state.rows.length > 0;
  }

  function showCount(count) {
    $("match-count").textContent = count + (count === 1 ? " event" : " events");
  }

  async function reload() {
    const generation = ++state.generation;
    const [page, status] = await Promise.all([
      api("/api/events", Object.assign({ order: "desc", limit: PAGE }, filters())),
      api("/api/status"),
    ]);
    if (generation !== state.generation) return; // a newer reload started meanwhile
    state.rows = page.results;
    state.newest = page.results.length ? Math.max(page.results[0].id, status.latest_id) : status.latest_id;
    state.oldest = page.results.length ? page.results[page.results.length - 1].id : null;
    $("more").hidden = page.count <= page.results.length;
    showCount(page.count);
    render();
  }

  async function pollEvents() {
    const generation = state.generation;
    const page = await api("/api/events", Object.assign({ order: "desc", limit: PAGE, after: state.newest }, filters()));
    if (generation !== state.generation) return;
    if (page.count > page.results.length) return reload(); // more arrived than a page: start over
    if (page.results.length) {
      state.newest = page.results[0].id;
      prepend(page.results);
      const shown = Number(($("match-count").textContent.split(" ")[0]) || 0);
      showCount(shown + page.results.length);
    }
  }

  async function older() {
    if (state.oldest === null) return;
    const page = await api("/api/events", Object.assign({ order: "desc", limit: PAGE, before: state.oldest }, filters()));
    state.rows = state.rows.concat(page.results);
    if (page.results.length) state.oldest = page.results[page.results.length - 1].id;
    $("more").hidden = page.count <= page.results.length;
    render();
  }

  // -- one event -----------------------------------------------------------------------------

  function sourceBlock(frame) {
    const lines = [];
    const first = (frame.lineno || 0) - (frame.pre_context || []).length;
    (frame.pre_context || []).forEach((line, i) => lines.push([first + i, line, false]));
    if (typeof frame.context_line === "string") lines.push([frame.lineno, frame.context_line, true]);
    (frame.post_context || []).forEach((line, i) => lines.push([(frame.lineno || 0) + 1 + i, line, false]));
    if (!lines.length) return null;
    const block = el("div", { class: "source" });
    for (const [number, line, current] of lines) {
      block.appendChild(el("span", { class: current ? "current" : "" }, String(number).padStart(5) + "  " + line));
    }
    return block;
  }

  function exceptionView(props) {
    const list = Array.isArray(props.$exception_list) ? props.$exception_list : [];
    const box = el("div", {});
    // the list holds the raised exception first, then its causes
    for (const entry of list) {
      if (!entry || typeof entry !== "object") continue;
      const part = el("div", { class: "exc" },
        el("div", { class: "exc-title" }, String(entry.type) + ": " + String(entry.value === undefined ? "" : entry.value)));
      if (entry.mechanism && entry.mechanism.type) {
        part.appendChild(el("div", { class: "muted" }, "mechanism: " + entry.mechanism.type +
          (entry.mechanism.handled === false ? " (unhandled)" : "")));
      }
      const frames = (entry.stacktrace && Array.isArray(entry.stacktrace.frames)) ? entry.stacktrace.frames : [];
      part.appendChild(el("div", { class: "muted" }, "Traceback (most recent call last):"));
      for (const frame of frames) {
        if (!frame || typeof frame !== "object") continue;
        const where = el("div", { class: "frame-where" + (frame.in_app === false ? " lib" : "") },
          "File \"" + (frame.filename || frame.abs_path || "?") + "\", line " + frame.lineno + ", in " + frame.function);
        part.appendChild(el("div", { class: "frame" }, where, sourceBlock(frame)));
      }
      box.appendChild(part);
    }
    return box;
  }

  function show(event, tr) {
    state.selected = event.id;
    for (const other of document.querySelectorAll("#rows tr.selected")) other.classList.remove("selected");
    if (tr) tr.classList.add("selected");
    $("detail").hidden = false;
    $("detail-title").textContent = event.event + " · " + event.distinct_id;
    const exception = $("exception");
    clear(exception);
    if (event.event === "$exception") exception.appendChild(exceptionView(event.properties || {}));
    // The key is masked here too: the page may be on a shared screen or in a screenshot.
    $("json").textContent = JSON.stringify({ ...event, api_key: mask(event.api_key) }, null, 2);
  }

  async function copyJson() {
    const text = $("json").textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (error) {
      const range = document.createRange();
      range.selectNodeContents($("json"));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      document.execCommand("copy");
    }
    $("copy").textContent = "copied";
    setTimeout(() => { $("copy").textContent = "copy JSON"; }, 1200);
  }

  // -- counters, faults, flags ------------------------------------------------------------------

  async function pollProjects() {
    const data = await api("/api/projects");
    const body = $("project-rows");
    clear(body);
    const select = $("f-project");
    const known = new Set(Array.from(select.options).map((o) => o.value));
    for (const p of data.projects) {
      const rejected = Object.entries(p.rejected).map(([why, n]) => why + ": " + n).join(", ");
      const gzip = p.gzip_share === null ? "–" : Math.round(p.gzip_share * 100) + "%";
      body.appendChild(el("tr", {},
        el("td", { title: "api key, masked" }, mask(p.api_key)),
        el("td", {}, p.events), el("td", {}, p.batches), el("td", {}, gzip),
        el("td", { class: rejected ? "bad" : "" }, rejected || "–")));
      if (p.api_key !== null && !known.has(p.api_key)) {
        select.appendChild(el("option", { value: p.api_key }, mask(p.api_key)));
        known.add(p.api_key);
      }
    }
  }

  function showFaults(data) {
    const action = data.mode === "up" ? (data.delay.seconds > 0 ? "slow" : "up") : data.mode;
    $("fault-mode").textContent = data.mode === "error" ? "error " + data.status : data.mode +
      (data.delay.seconds > 0 ? " (+" + data.delay.seconds + " s delay)" : "");
    for (const button of document.querySelectorAll("#faults button")) {
      button.classList.toggle("active", button.dataset.action === action);
    }
  }

  async function pollFaults() {
    showFaults(await api("/api/faults"));
  }

  async function switchFault(action) {
    const body = action === "error" ? { action: "error", status: 500 } : { action: action };
    const response = await fetch("/api/faults", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (response.ok) showFaults(await response.json());
  }

  async function pollFlags() {
    const project = $("f-project").value;
    const data = await api("/api/flag_calls", project ? { project: project } : {});
    const box = $("flag-groups");
    clear(box);
    if (!data.flags.length) {
      box.appendChild(el("p", { class: "muted" }, "No $feature_flag_called events."));
      return;
    }
    for (const flag of data.flags) {
      const table = el("table", {}, el("thead", {}, el("tr", {},
        el("th", {}, "response"), el("th", {}, "users"), el("th", {}, "calls"), el("th", {}, "who"))));
      const body = el("tbody", {});
      for (const variant of flag.variants) {
        const more = variant.users > variant.sample.length ? " …" : "";
        body.appendChild(el("tr", {},
          el("td", {}, JSON.stringify(variant.response)), el("td", {}, variant.users),
          el("td", {}, variant.events), el("td", {}, variant.sample.join(", ") + more)));
      }
      table.appendChild(body);
      box.appendChild(el("div", { class: "flag", "data-flag": flag.flag },
        el("h3", {}, flag.flag + " (" + flag.events + " calls)"), table));
    }
  }

  // -- wiring ------------------------------------------------------------------------------------

  function live(ok, text) {
    const badge = $("live");
    badge.className = "live " + (ok ? "ok" : "down");
    badge.textContent = text;
  }

  let ticks = 0;
  async function tick() {
    try {
      await pollEvents();
      await Promise.all([pollProjects(), pollFaults(), ticks % 3 === 0 ? pollFlags() : null]);
      live(true, "live");
    } catch (error) {
      live(false, "server unreachable: " + error.message);
    }
    ticks++;
    setTimeout(tick, POLL_MS);
  }

  let typing = null;
  function onFilter() {
    clearTimeout(typing);
    typing = setTimeout(() => {
      reload().catch((error) => live(false, error.message));
      pollFlags().catch(() => {});
    }, 200);
  }

  async function start() {
    for (const id of ["f-project", "f-event", "f-distinct", "f-q"]) {
      $(id).addEventListener("input", onFilter);
      $(id).addEventListener("change", onFilter);
    }
    $("filters").addEventListener("submit", (e) => e.preventDefault());
    for (const button of document.querySelectorAll("#faults button")) {
      button.addEventListener("click", () => switchFault(button.dataset.action));
    }
    $("more").addEventListener("click", () => older());
    $("copy").addEventListener("click", () => copyJson());
    $("close").addEventListener("click", () => { $("detail").hidden = true; state.selected = null; });
    try {
      await Promise.all([reload(), pollProjects(), pollFaults(), pollFlags()]);
      live(true, "live");
    } catch (error) {
      live(false, "server unreachable: " + error.message);
    }
    document.body.dataset.state = "ready";
    setTimeout(tick, POLL_MS);
  }

  start();
})();
