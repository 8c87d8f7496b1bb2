// jetask console: plain JavaScript, no framework, no build step. Everything it shows comes from
// the public HTTP API (/v1/...) with the token the user gives it. Data from tasks (inputs,
// results, errors) is only ever set as text, never as markup.
(function () {
  "use strict";

  // ---------- small helpers ----------

  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  // h("tag.class#id", {attr: value, onclick: fn}, child, ...): children are nodes or text.
  function h(spec, attrs, ...children) {
    const m = /^([a-z0-9]+)((?:[.#][\w-]+)*)$/i.exec(spec);
    const el = document.createElement(m ? m[1] : spec);
    if (m && m[2]) {
      for (const part of m[2].match(/[.#][\w-]+/g)) {
        if (part[0] === ".") el.classList.add(part.slice(1));
        else el.id = part.slice(1);
      }
    }
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
        else if (k === "text") el.textContent = v;
        else if (k === "dataset") Object.assign(el.dataset, v);
        // Through the CSSOM: the page's policy refuses inline style attributes.
        else if (k === "style") el.style.cssText = v;
        else el.setAttribute(k, v === true ? "" : String(v));
      }
    }
    append(el, children);
    return el;
  }
  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return el;
  }

  const nf = new Intl.NumberFormat();
  const num = (n) => (n === null || n === undefined ? "–" : nf.format(n));

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return ms + " ms";
    if (ms < 10000) return (ms / 1000).toFixed(2) + " s";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    const m = Math.floor(ms / 60000);
    if (m < 60) return m + "m " + String(Math.floor((ms % 60000) / 1000)).padStart(2, "0") + "s";
    const hh = Math.floor(m / 60);
    if (hh < 48) return hh + "h " + String(m % 60).padStart(2, "0") + "m";
    return Math.floor(hh / 24) + "d " + (hh % 24) + "h";
  }
  function fmtTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    const today = new Date();
    const sameDay = d.toDateString() === today.toDateString();
    const t = d.toLocaleTimeString(undefined, { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
    return sameDay ? t : d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " + t;
  }
  function ago(iso) {
    if (!iso) return "";
    const ms = Date.now() - new Date(iso).getTime();
    if (ms < 0) return "in " + fmtMs(-ms);
    if (ms < 1000) return "just now";
    return fmtMs(Math.round(ms / 1000) * 1000) + " ago";
  }
  function when(iso) {
    if (!iso) return h("span.muted", null, "–");
    return h("time", { datetime: iso, title: new Date(iso).toString() }, fmtTime(iso));
  }
  function badge(status) {
    return h("span.badge." + status, { dataset: { status } }, status);
  }
  // A count cell: faint when zero.
  function count(n, cls) {
    return h("span" + (n ? cls || "" : ".zero"), null, num(n));
  }

  let toastTimer = 0;
  function toast(text, bad) {
    const t = $("#toast");
    t.textContent = text;
    t.className = "show" + (bad ? " bad" : "");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (t.className = ""), bad ? 6000 : 3000);
  }

  // ---------- API client ----------

  const TOKEN_KEY = "jetask.token";
  let token = localStorage.getItem(TOKEN_KEY) || "";
  let loginWaiters = null;

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body, headers) {
    for (;;) {
      const opts = { method, headers: Object.assign({}, headers || {}) };
      if (token) opts.headers.Authorization = "Bearer " + token;
      if (body !== undefined) {
        opts.headers["Content-Type"] = "application/json";
        opts.body = typeof body === "string" ? body : JSON.stringify(body);
      }
      let resp;
      try {
        resp = await fetch(path, opts);
      } catch (e) {
        throw new ApiError(0, "network", "jetask cannot be reached: " + e.message);
      }
      if (resp.status === 401 || (resp.status === 403 && token)) {
        const why = resp.status === 403 ? "That token is not known." : "";
        await askToken(why);
        continue;
      }
      const text = await resp.text();
      let data = null;
      try {
        data = text ? JSON.parse(text) : null;
      } catch (_) {
        data = text;
      }
      if (!resp.ok) {
        const e = (data && data.error) || {};
        throw new ApiError(resp.status, e.code || "http_" + resp.status, e.message || resp.statusText || "request failed");
      }
      return data;
    }
  }

  // Shows the sign-in dialog; resolves once a token is given. Every request that met a 401
  // meanwhile waits for the same answer.
  function askToken(why) {
    if (loginWaiters) return new Promise((r) => loginWaiters.push(r));
    loginWaiters = [];
    const d = $("#login");
    const err = $("#login-error");
    err.hidden = !why;
    err.textContent = why || "";
    $("#login-token").value = "";
    if (!d.open) d.showModal();
    $("#login-token").focus();
    return new Promise((resolve) => {
      loginWaiters.push(resolve);
    });
  }
  function setupLogin() {
    const d = $("#login");
    $("#login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = $("#login-token").value.trim();
      if (!v) return;
      token = v;
      localStorage.setItem(TOKEN_KEY, token);
      d.close();
      $("#signout").hidden = false;
      const waiting = loginWaiters || [];
      loginWaiters = null;
      waiting.forEach((r) => r());
    });
    // The dialog cannot be dismissed without a token: nothing can be shown without one.
    d.addEventListener("cancel", (ev) => ev.preventDefault());
    $("#signout").addEventListener("click", () => {
      token = "";
      localStorage.removeItem(TOKEN_KEY);
      $("#signout").hidden = true;
      $("#who").textContent = "";
      route();
    });
    $("#signout").hidden = !token;
  }
  function showUser(user) {
    $("#who").textContent = user ? "user " + user : "";
    $("#signout").hidden = !token;
  }

  // ---------- dialogs ----------

  function confirmDialog(title, body, okLabel, danger) {
    const d = $("#confirm");
    $("#confirm-title").textContent = title;
    const b = $("#confirm-body");
    b.replaceChildren(...[].concat(body));
    const ok = $("#confirm-ok");
    ok.textContent = okLabel || "OK";
    ok.className = danger ? "danger" : "primary";
    d.returnValue = "";
    d.showModal();
    ok.focus();
    return new Promise((resolve) => {
      d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    });
  }

  // A JSON editor; `save(value)` throws an ApiError to show and keep the dialog open.
  function editJson(title, hint, value, save) {
    const d = $("#editor");
    $("#editor-title").textContent = title;
    $("#editor-hint").textContent = hint || "";
    const text = $("#editor-text");
    text.value = JSON.stringify(value, null, 2);
    const err = $("#editor-error");
    err.hidden = true;
    const doSave = async () => {
      let parsed;
      try {
        parsed = JSON.parse(text.value);
      } catch (e) {
        err.textContent = "Not JSON: " + e.message;
        err.hidden = false;
        return;
      }
      try {
        await save(parsed);
        d.close();
      } catch (e) {
        err.textContent = e.message;
        err.hidden = false;
      }
    };
    const saveBtn = $("#editor-save");
    const onClick = () => doSave();
    const onKey = (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        doSave();
      }
    };
    saveBtn.addEventListener("click", onClick);
    text.addEventListener("keydown", onKey);
    d.addEventListener(
      "close",
      () => {
        saveBtn.removeEventListener("click", onClick);
        text.removeEventListener("keydown", onKey);
      },
      { once: true }
    );
    d.showModal();
    text.focus();
  }

  // ---------- routing ----------

  // The page shown now: its timers stop when another is shown.
  let view = { stop() {} };
  function parseHash() {
    const raw = location.hash.replace(/^#/, "") || "/";
    const [path, query] = raw.split("?");
    return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query || "") };
  }
  function route() {
    view.stop();
    const { parts, params } = parseHash();
    const page = parts[0] || "overview";
    $$(".top nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === (page === "task" ? "tasks" : page)));
    const main = $("#main");
    main.replaceChildren();
    selected = -1;
    const pages = { overview: overviewPage, tasks: tasksPage, task: taskPage, functions: functionsPage, schedules: schedulesPage };
    const make = pages[page] || notFound;
    view = make(main, params, parts.slice(1)) || { stop() {} };
  }
  function go(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  }
  function notFound(main) {
    append(main, [h("h1", null, "Not found"), h("p", null, h("a", { href: "#/" }, "Back to the overview"))]);
  }

  // Runs `load` now and every `ms` while the page is shown (and the tab visible); `load`
  // gets `true` when the run is the first.
  function poller(ms, load) {
    let timer = 0;
    let stopped = false;
    let running = false;
    const tick = async (first) => {
      if (stopped || running) return;
      running = true;
      try {
        await load(first);
      } finally {
        running = false;
        if (!stopped) timer = setTimeout(() => tick(false), ms);
      }
    };
    const onVisible = () => {
      if (!document.hidden && !stopped) {
        clearTimeout(timer);
        tick(false);
      }
    };
    document.addEventListener("visibilitychange", onVisible);
    tick(true);
    return {
      stop() {
        stopped = true;
        clearTimeout(timer);
        document.removeEventListener("visibilitychange", onVisible);
      },
      now() {
        clearTimeout(timer);
        tick(false);
      },
    };
  }

  function errorNotice(e) {
    return h("div.notice.bad", { role: "alert" }, e.message || String(e));
  }
  function pageHead(title, ...rest) {
    return h("div.page-head", null, h("h1", null, title), ...rest);
  }
  function liveStamp() {
    const el = h("span.live", { "aria-live": "off" }, "live");
    return {
      el,
      ok(at) {
        el.classList.remove("stale");
        el.textContent = "live · " + new Date(at || Date.now()).toLocaleTimeString(undefined, { hour12: false });
      },
      stale(msg) {
        el.classList.add("stale");
        el.textContent = msg || "not updating";
      },
    };
  }

  // ---------- overview ----------

  function sparkline(series) {
    const w = 96;
    const hgt = 28;
    const n = series.finished.length;
    const max = Math.max(1, ...series.finished);
    const bw = w / n;
    const start = new Date(series.start).getTime();
    const svg = s("svg", { class: "spark", width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}`, role: "img" });
    const total = series.finished.reduce((a, b) => a + b, 0);
    const failed = series.failed.reduce((a, b) => a + b, 0);
    svg.append(s("title", {}, `last hour: ${total} finished, ${failed} failed (per minute)`));
    svg.append(s("line", { class: "base", x1: 0, y1: hgt - 0.5, x2: w, y2: hgt - 0.5 }));
    for (let i = 0; i < n; i++) {
      const f = series.finished[i];
      if (!f) continue;
      const x = i * bw + 0.5;
      const fh = Math.max(1, (f / max) * (hgt - 2));
      const minute = new Date(start + i * 60000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
      const bar = s("rect", { class: "f", x, y: hgt - fh, width: Math.max(1, bw - 1), height: fh });
      bar.append(s("title", {}, `${minute}: ${f} finished, ${series.failed[i]} failed`));
      svg.append(bar);
      const x2 = series.failed[i];
      if (x2) {
        const xh = Math.max(1, (x2 / max) * (hgt - 2));
        svg.append(s("rect", { class: "x", x, y: hgt - xh, width: Math.max(1, bw - 1), height: xh }));
      }
    }
    return svg;
  }

  function pct(p) {
    if (!p || !p.count) return h("span.zero", null, "–");
    return h("span", { title: `${num(p.count)} tasks` }, fmtMs(p.p50), h("span.sep", null, "/"), fmtMs(p.p99));
  }
  function rate(r) {
    return r ? `${r.per_second}/s` + (r.burst ? ` (burst ${r.burst})` : "") : "";
  }

  function overviewPage(main) {
    const stamp = liveStamp();
    const tiles = h("div.tiles");
    const notice = h("div");
    const body = h("tbody");
    const table = h(
      "table.grid.cards#overview",
      null,
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          h("th", null, "Function"),
          h("th.num", null, "Queued"),
          h("th.num", null, "Delayed"),
          h("th.num", null, "Running"),
          h("th.num", { title: "Waiting because of a rate limit or a 429/503; the function's rate limits" }, "Throttled"),
          h("th.num", { title: "Succeeded / failed in the last minute" }, "Last min ✓/✗"),
          h("th.num", { title: "Succeeded / failed in the last hour" }, "Last hour ✓/✗"),
          h("th", { title: "Throughput (blue) and failures (red) per minute, last hour" }, "Last hour"),
          h("th.num", { title: "Concurrency limit now / max" }, "Concurrency"),
          h("th.num", { title: "Queue time p50 / p99, last hour" }, "Queue p50/p99"),
          h("th.num", { title: "Run time of the last attempt p50 / p99, last hour" }, "Run p50/p99"),
          h("th", null, "")
        )
      ),
      body
    );
    append(main, [
      pageHead("Overview", h("span.spacer"), stamp.el),
      notice,
      tiles,
      h("div.panel", null, h("div.scroll", null, table)),
    ]);
    const tile = (label, value, cls) =>
      h("div.tile" + (cls || ""), null, h("div.label", null, label), h("div.value", null, num(value)));
    const cell = (label, col, ...content) => h("td.num", { "data-label": label, dataset: { col } }, h("span", null, ...content));
    const p = poller(2000, async () => {
      let o;
      try {
        o = await api("GET", "/v1/overview");
      } catch (e) {
        stamp.stale("not updating");
        notice.replaceChildren(errorNotice(e));
        return;
      }
      notice.replaceChildren();
      showUser(o.user);
      if (!o.index_ready) notice.replaceChildren(h("div.notice", null, "The list index is still catching up: figures may be low."));
      stamp.ok(o.at);
      const sum = (f) => o.functions.reduce((a, x) => a + f(x), 0);
      const failedHour = sum((x) => x.last_hour.failed);
      tiles.replaceChildren(
        tile("Queued", sum((x) => x.queued)),
        tile("Delayed", sum((x) => x.delayed)),
        tile("Running", sum((x) => x.running)),
        tile("Succeeded, last hour", sum((x) => x.last_hour.succeeded), ".ok"),
        tile("Failed, last hour", failedHour, failedHour ? ".bad" : "")
      );
      if (!o.functions.length) {
        body.replaceChildren(
          h("tr", null, h("td.empty", { colspan: 12 }, "No functions yet. Create one with PUT /v1/functions/{name}."))
        );
        return;
      }
      body.replaceChildren(
        ...o.functions.map((f) => {
          const tasks = "#/tasks?function=" + encodeURIComponent(f.name);
          const failedLink = (n, since) =>
            n
              ? h("a.bad-n", { href: tasks + "&status=Failed&since=" + encodeURIComponent(since), title: "Show these failed tasks" }, num(n))
              : count(0);
          const minuteAgo = new Date(Date.now() - 60000).toISOString();
          const hourAgo = new Date(Date.now() - 3600000).toISOString();
          return h(
            "tr",
            { dataset: { function: f.name } },
            h(
              "td.head",
              { "data-label": "Function" },
              h("a", { href: tasks }, f.name),
              f.enabled ? null : [" ", h("span.badge.off", null, "disabled")]
            ),
            cell("Queued", "queued", count(f.queued)),
            cell("Delayed", "delayed", count(f.delayed)),
            cell("Running", "running", count(f.running, ".ok-n")),
            cell(
              "Throttled",
              "throttled",
              count(f.throttled, ".bad-n"),
              f.rate_limit || f.user_rate_limit
                ? h("span.sub", { dataset: { col: "rate" } }, [rate(f.rate_limit) ? "≤ " + rate(f.rate_limit) : "", f.user_rate_limit ? (f.rate_limit ? ", " : "≤ ") + rate(f.user_rate_limit) + " per user" : ""].join(""))
                : null
            ),
            cell(
              "Last min ✓/✗",
              "minute",
              h("span", { dataset: { col: "succeeded_minute" } }, count(f.last_minute.succeeded, ".ok-n")),
              h("span.sep", null, "/"),
              h("span", { dataset: { col: "failed_minute" } }, failedLink(f.last_minute.failed, minuteAgo))
            ),
            cell(
              "Last hour ✓/✗",
              "hour",
              h("span", { dataset: { col: "succeeded_hour" } }, count(f.last_hour.succeeded, ".ok-n")),
              h("span.sep", null, "/"),
              h("span", { dataset: { col: "failed_hour" } }, failedLink(f.last_hour.failed, hourAgo))
            ),
            h("td", { "data-label": "Last hour", dataset: { col: "chart" } }, sparkline(f.series)),
            cell(
              "Concurrency",
              "concurrency",
              h("span", { title: f.concurrency.adaptive ? `adaptive, ${f.concurrency.min}–${f.concurrency.max}` : "fixed" }, num(f.concurrency.limit), h("span.sep", null, "/"), num(f.concurrency.max))
            ),
            cell("Queue p50/p99", "queue", pct(f.queue_ms)),
            cell("Run p50/p99", "run", pct(f.run_ms)),
            h("td", { "data-label": "" }, h("a.btn.small", { href: tasks, dataset: { tasks: f.name } }, "Tasks"))
          );
        })
      );
    });
    return p;
  }

  // ---------- tasks ----------

  const STATES = ["Enqueued", "Dequeued", "Running", "Retrying", "Stopping", "Succeeded", "Failed", "Stopped", "Expired", "Invalid"];
  const FILTERS = ["function", "status", "user", "since", "until", "id_prefix"];
  const BULK = ["function", "status", "user", "since", "until"];
  const PAGE = 50;
  // Cursors of the pages before the one shown, per filter: "Newer" goes back through them.
  const cursorTrail = new Map();

  function toLocalInput(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d)) return "";
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function fromLocalInput(v) {
    if (!v) return "";
    const d = new Date(v);
    return isNaN(d) ? "" : d.toISOString();
  }

  let functionNames = null;
  async function loadFunctionNames() {
    if (!functionNames) {
      try {
        functionNames = (await api("GET", "/v1/functions")).functions.map((f) => f.name).sort();
      } catch (_) {
        functionNames = [];
      }
    }
    return functionNames;
  }

  function tasksPage(main, params) {
    const filter = {};
    for (const k of FILTERS) if (params.get(k)) filter[k] = params.get(k);
    const cursor = params.get("cursor") || "";
    const key = JSON.stringify(filter);
    const trail = cursorTrail.get(key) || [];

    const fnSelect = h("select", { name: "function", id: "f-function" }, h("option", { value: "" }, "any function"));
    if (filter.function) fnSelect.append(h("option", { value: filter.function, selected: true }, filter.function));
    loadFunctionNames().then((names) => {
      for (const n of names) if (n !== filter.function) fnSelect.append(h("option", { value: n }, n));
    });
    const stSelect = h(
      "select",
      { name: "status", id: "f-status" },
      h("option", { value: "" }, "any state"),
      STATES.map((st) => h("option", { value: st, selected: filter.status && filter.status.toLowerCase() === st.toLowerCase() }, st))
    );
    const userInput = h("input", { name: "user", id: "f-user", value: filter.user || "", placeholder: "any user", autocomplete: "off" });
    const since = h("input", { name: "since", id: "f-since", type: "datetime-local", step: 1, value: toLocalInput(filter.since) });
    const until = h("input", { name: "until", id: "f-until", type: "datetime-local", step: 1, value: toLocalInput(filter.until) });
    const idInput = h("input", {
      name: "id_prefix",
      id: "f-id",
      type: "search",
      value: filter.id_prefix || "",
      placeholder: "ID or its start  ( / )",
      autocomplete: "off",
      spellcheck: "false",
      maxlength: 128,
      pattern: "[A-Za-z0-9_\\-]*",
      title: "Letters, digits, _ and -",
    });
    const readForm = () => {
      const f = {};
      if (fnSelect.value) f.function = fnSelect.value;
      if (stSelect.value) f.status = stSelect.value;
      if (userInput.value.trim()) f.user = userInput.value.trim();
      if (since.value) f.since = fromLocalInput(since.value);
      if (until.value) f.until = fromLocalInput(until.value);
      if (idInput.value.trim()) f.id_prefix = idInput.value.trim();
      return f;
    };
    const apply = (f) => {
      const q = new URLSearchParams();
      for (const k of FILTERS) if (f[k]) q.set(k, f[k]);
      const s = q.toString();
      go("#/tasks" + (s ? "?" + s : ""));
    };
    const preset = (label, ms) =>
      h("button.small", { type: "button", onclick: () => apply(Object.assign(readForm(), { since: ms ? new Date(Date.now() - ms).toISOString() : "", until: "" })) }, label);
    const form = h(
      "form.filters#task-filters",
      {
        onsubmit: (ev) => {
          ev.preventDefault();
          apply(readForm());
        },
      },
      h("label.id", null, "Task ID", idInput),
      h("label", null, "Function", fnSelect),
      h("label", null, "State", stSelect),
      h("label", null, "User", userInput),
      h("label", null, "Created from", since),
      h("label", null, "Created until", until),
      h(
        "div.buttons",
        null,
        h("button.primary#apply", { type: "submit" }, "Apply"),
        h("button", { type: "button", onclick: () => apply({}) }, "Clear"),
        preset("Last hour", 3600000),
        preset("Last 24 h", 86400000)
      )
    );
    fnSelect.addEventListener("change", () => apply(readForm()));
    stSelect.addEventListener("change", () => apply(readForm()));

    const bulkFilter = {};
    for (const k of BULK) if (filter[k]) bulkFilter[k] = filter[k];
    const canBulk = Object.keys(bulkFilter).length > 0 && !filter.id_prefix;
    const bulkWhy = filter.id_prefix
      ? "An ID prefix is not a bulk filter: clear it to act on every match"
      : "Choose a function, state, user or time range first";
    const bulkResult = h("div#bulk-result", { "aria-live": "polite" });
    const describe = () => {
      const parts = [];
      parts.push(filter.status ? `${filter.status} tasks` : "tasks in any state");
      if (filter.function) parts.push(`of ${filter.function}`);
      if (filter.user) parts.push(`of user ${filter.user}`);
      if (filter.since) parts.push(`created from ${fmtTime(filter.since)}`);
      if (filter.until) parts.push(`until ${fmtTime(filter.until)}`);
      return parts.join(" ");
    };
    const bulk = async (what) => {
      const verb = what === "stop" ? "Stop" : "Replay";
      const ok = await confirmDialog(
        `${verb} every matching task?`,
        [
          h("p", null, `${verb} every one of the ${describe()} — all pages, not only the one shown.`),
          h("pre.data", null, JSON.stringify(bulkFilter, null, 2)),
          what === "replay" ? h("p.muted.small", null, "Only Failed, Expired and Stopped tasks can be replayed; the others are skipped.") : h("p.muted.small", null, "Finished tasks are skipped."),
        ],
        verb + " matching",
        what === "stop"
      );
      if (!ok) return;
      bulkResult.replaceChildren(h("div.result-box", null, "Working…"));
      try {
        const r = await api("POST", `/v1/tasks:${what}`, bulkFilter, what === "replay" ? { "Idempotency-Key": "console-" + Date.now().toString(36) + Math.random().toString(36).slice(2, 8) } : {});
        const text = `${verb}: matched ${r.matched}, acted ${r.acted}, skipped ${r.skipped}, failed ${r.failed}`;
        bulkResult.replaceChildren(
          h(
            "div.result-box",
            { dataset: { matched: r.matched, acted: r.acted } },
            text,
            r.errors && r.errors.length ? h("div.error", null, r.errors.map((e) => `${e.task_id}: ${e.error.message}`).join("; ")) : null
          )
        );
        toast(text);
        p.now();
      } catch (e) {
        bulkResult.replaceChildren(h("div.result-box.error", null, e.message));
      }
    };

    const status = h("span.muted.small#page-info");
    const body = h("tbody");
    const table = h(
      "table.grid.cards#tasks",
      null,
      h(
        "thead",
        null,
        h("tr", null, h("th", null, "Task"), h("th", null, "State"), h("th", null, "Function"), h("th", null, "User"), h("th", null, "Created"), h("th.num", null, "Attempts"), h("th.num", null, "Queue"), h("th.num", null, "Run"))
      ),
      body
    );
    const newer = h("button#newer", { type: "button", disabled: !cursor, onclick: () => {
      const prev = trail.slice(0, -1);
      cursorTrail.set(key, prev);
      const q = new URLSearchParams(params);
      const back = trail[trail.length - 1] || "";
      if (back) q.set("cursor", back);
      else q.delete("cursor");
      go("#/tasks?" + q.toString());
    } }, "← Newer");
    const older = h("button#older", { type: "button", disabled: true }, "Older →");
    const first = h("button", { type: "button", disabled: !cursor, onclick: () => {
      cursorTrail.set(key, []);
      const q = new URLSearchParams(params);
      q.delete("cursor");
      go("#/tasks?" + q.toString());
    } }, "Newest");
    const notice = h("div");
    const stamp = liveStamp();
    append(main, [
      pageHead("Tasks", h("span.spacer"), stamp.el),
      notice,
      h(
        "div.panel",
        null,
        form,
        h(
          "div.bar-actions",
          null,
          h("span.muted.small", null, canBulk ? `Every task matching: ${describe()}` : bulkWhy),
          h("span.spacer"),
          h("button.danger#bulk-stop", { type: "button", disabled: !canBulk, title: canBulk ? "" : bulkWhy, onclick: () => bulk("stop") }, "Stop matching…"),
          h("button#bulk-replay", { type: "button", disabled: !canBulk, title: canBulk ? "" : bulkWhy, onclick: () => bulk("replay") }, "Replay matching…")
        ),
        bulkResult
      ),
      h("div.panel", null, h("div.scroll", null, table), h("div.pager", null, status, h("span.spacer"), first, newer, older)),
    ]);

    const q = new URLSearchParams();
    for (const k of FILTERS) if (filter[k]) q.set(k, filter[k]);
    q.set("limit", String(PAGE));
    if (cursor) q.set("cursor", cursor);
    let lastIds = null;
    const p = poller(3000, async (firstRun) => {
      // Pages after the first stay as they are: only the newest page follows new tasks.
      if (!firstRun && cursor) return;
      let r;
      const t0 = performance.now();
      try {
        r = await api("GET", "/v1/tasks?" + q.toString());
      } catch (e) {
        stamp.stale();
        notice.replaceChildren(errorNotice(e));
        body.replaceChildren();
        return;
      }
      notice.replaceChildren();
      stamp.ok();
      const took = Math.round(performance.now() - t0);
      status.textContent = `${r.tasks.length} task${r.tasks.length === 1 ? "" : "s"} on this page · ${took} ms`;
      const ids = r.tasks.map((t) => t.id + t.status).join();
      older.disabled = !r.next_cursor;
      older.onclick = () => {
        cursorTrail.set(key, trail.concat([cursor]));
        const q2 = new URLSearchParams(params);
        q2.set("cursor", r.next_cursor);
        go("#/tasks?" + q2.toString());
      };
      if (ids === lastIds) return;
      lastIds = ids;
      if (!r.tasks.length) {
        body.replaceChildren(h("tr", null, h("td.empty", { colspan: 8 }, Object.keys(filter).length ? "No task matches these filters." : "No tasks yet.")));
        return;
      }
      const keep = selected;
      body.replaceChildren(
        ...r.tasks.map((t) =>
          h(
            "tr",
            { dataset: { id: t.id, status: t.status } },
            h("td.head", { "data-label": "Task" }, h("a.mono", { href: "#/task/" + encodeURIComponent(t.id) }, t.id)),
            h("td", { "data-label": "State" }, badge(t.status)),
            h("td", { "data-label": "Function" }, t.function),
            h("td", { "data-label": "User" }, t.user),
            h("td", { "data-label": "Created", title: t.created_at }, when(t.created_at)),
            h("td.num", { "data-label": "Attempts" }, num(t.attempts)),
            h("td.num", { "data-label": "Queue" }, fmtMs(t.queue_ms)),
            h("td.num", { "data-label": "Run" }, fmtMs(t.duration_ms))
          )
        )
      );
      if (keep >= 0) select(keep);
    });
    return p;
  }

  // ---------- one task ----------

  const KIND_LABEL = {
    delayed: "Delayed",
    queued: "Queued",
    waiting: "Waiting for a slot",
    throttled: "Throttled",
    attempt: "Attempt",
    backoff: "Backoff",
    stopping: "Stopping",
  };

  function timelineView(tl) {
    const spans = tl.spans;
    if (!spans.length) return h("p.muted", null, "No time spent yet.");
    const t0 = new Date(spans[0].start).getTime();
    const t1 = Math.max(t0 + 1, ...spans.map((sp) => new Date(sp.end).getTime()));
    const total = t1 - t0;
    const grid = h("div.timeline", { role: "list" });
    for (const sp of spans) {
      const a = new Date(sp.start).getTime() - t0;
      const left = (a / total) * 100;
      const width = (sp.duration_ms / total) * 100;
      let label = KIND_LABEL[sp.kind] || sp.kind;
      if (sp.kind === "attempt" && sp.attempt) label += " " + sp.attempt;
      const outcome = sp.kind === "attempt" && sp.outcome ? sp.outcome : "";
      const title = `${label}: ${fmtMs(sp.duration_ms)} from ${fmtTime(sp.start)}${sp.open ? " (still going)" : ""}${sp.detail ? " — " + sp.detail : ""}`;
      append(grid, [
        h("div.label", { role: "listitem" }, h("span", null, label), sp.detail ? h("span.detail", null, sp.detail) : null, outcome && outcome !== "Retrying" ? badge(outcome) : null),
        h(
          "div.track",
          null,
          h("div.span.k-" + sp.kind + (outcome ? "." + outcome : "") + (sp.open ? ".open" : ""), {
            style: `left:${left.toFixed(3)}%;width:${width.toFixed(3)}%`,
            title,
            dataset: { kind: sp.kind, attempt: sp.attempt || "", open: sp.open ? "1" : "" },
          })
        ),
        h("div.dur", null, fmtMs(sp.duration_ms))
      ]);
    }
    append(grid, [h("div.axis", null, h("span", null, fmtTime(spans[0].start)), h("span", null, "total " + fmtMs(total)), h("span", null, fmtTime(new Date(t1).toISOString())))]);
    const legend = h(
      "div.legend",
      null,
      [
        ["Delayed", "var(--stop)"],
        ["Queued / waiting", "var(--idle)"],
        ["Attempt", "var(--run)"],
        ["Succeeded", "var(--ok)"],
        ["Failed", "var(--bad)"],
        ["Backoff / throttled", "var(--warn)"],
      ].map(([t, c]) => h("span", { style: "--c:" + c }, t))
    );
    return [grid, legend];
  }

  function hexDump(bytes) {
    const lines = [];
    for (let i = 0; i < bytes.length; i += 16) {
      const row = bytes.slice(i, i + 16);
      const hex = Array.from(row, (b) => b.toString(16).padStart(2, "0")).join(" ");
      const ascii = Array.from(row, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
      lines.push(i.toString(16).padStart(8, "0") + "  " + hex.padEnd(48) + "  " + ascii);
    }
    return lines.join("\n");
  }
  function b64bytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  // Shows data given as text or base64: JSON pretty-printed, text as is, bytes as hex or
  // base64, with a switch between the forms that apply.
  function dataViewer(name, text, b64, truncated) {
    const box = h("div.viewer", { dataset: { name } });
    if (text === null && b64 === null) return append(box, [h("p.muted", null, "None.")]);
    const modes = [];
    if (text !== null) {
      try {
        const v = JSON.parse(text);
        if (typeof v === "object" && v !== null) modes.push(["JSON", JSON.stringify(v, null, 2)]);
      } catch (_) {
        /* not JSON */
      }
      modes.push(["Text", text]);
      if (text === "") modes.splice(0, modes.length, ["Text", ""]);
    } else {
      let bytes;
      try {
        bytes = b64bytes(b64);
      } catch (_) {
        bytes = new Uint8Array(0);
      }
      modes.push(["Hex", hexDump(bytes)], ["Base64", b64]);
    }
    const pre = h("pre.data", { dataset: { mode: modes[0][0] } });
    const show = (i) => {
      pre.textContent = modes[i][1] === "" ? "(empty)" : modes[i][1];
      pre.dataset.mode = modes[i][0];
      $$("button", tabs).forEach((b, j) => b.setAttribute("aria-pressed", String(i === j)));
    };
    const tabs = h("div.tabs", null, modes.map((m, i) => h("button.small", { type: "button", onclick: () => show(i) }, m[0])));
    if (truncated) tabs.append(h("span.muted.small", null, " cut to the size limit"));
    append(box, [tabs, pre]);
    show(0);
    return box;
  }

  function taskPage(main, _params, rest) {
    const id = rest[0] || "";
    const head = h("div");
    const actions = h("div.id-actions");
    const facts = h("dl.facts");
    const errorBox = h("div");
    const tlBox = h("div#timeline");
    const ioBox = h("div.two");
    const destBox = h("div");
    const history = h("tbody");
    const stamp = liveStamp();
    const notice = h("div");
    append(main, [
      h("p.small", null, h("a", { href: "#/tasks" }, "← Tasks")),
      notice,
      head,
      h("div.panel", null, h("div.panel-body", null, facts, errorBox)),
      h("div.panel", null, h("h2", null, "Timeline"), h("div.panel-body", null, tlBox)),
      ioBox,
      destBox,
      h("div.panel", null, h("h2", null, "History"), h("div.scroll", null, h("table.grid", null, h("thead", null, h("tr", null, h("th", null, "State"), h("th", null, "At"), h("th", null, "Detail"))), history))),
    ]);
    let ioShown = false;
    let record = null;
    const stop = async () => {
      const ok = await confirmDialog("Stop this task?", h("p", null, record.status === "Running" ? "Its attempt in flight is aborted." : "It will not run."), "Stop task", true);
      if (!ok) return;
      try {
        await api("POST", `/v1/tasks/${encodeURIComponent(id)}/stop`);
        toast("Stop requested");
      } catch (e) {
        toast(e.message, true);
      }
      p.now();
    };
    const replay = async () => {
      try {
        const r = await api("POST", `/v1/tasks/${encodeURIComponent(id)}/replay`);
        toast("Replayed as " + r.task_id);
        go("#/task/" + encodeURIComponent(r.task_id));
      } catch (e) {
        toast(e.message, true);
      }
    };
    const fact = (label, value) => h("div", null, h("dt", null, label), h("dd", null, value));
    const link = (tid) => (tid ? h("a.mono", { href: "#/task/" + encodeURIComponent(tid) }, tid) : h("span.muted", null, "–"));
    const p = poller(1000, async (firstRun) => {
      if (!firstRun && record && TERMINAL.has(record.status) && ioShown) return;
      let r, tl;
      try {
        [r, tl] = await Promise.all([
          api("GET", `/v1/tasks/${encodeURIComponent(id)}${ioShown ? "" : "?include_input=true"}`),
          api("GET", `/v1/tasks/${encodeURIComponent(id)}/timeline`),
        ]);
      } catch (e) {
        stamp.stale();
        notice.replaceChildren(errorNotice(e));
        return;
      }
      notice.replaceChildren();
      record = r;
      const done = TERMINAL.has(r.status);
      if (done) stamp.stale("finished");
      else stamp.ok();
      head.replaceChildren(
        h(
          "div.page-head",
          null,
          h("div.id-line", null, h("h1", null, r.id), h("span#task-status", { dataset: { status: r.status } }, badge(r.status))),
          h("span.spacer"),
          stamp.el,
          h("button.danger#stop", { type: "button", disabled: done || r.status === "Stopping", onclick: stop }, "Stop"),
          h("button#replay", { type: "button", disabled: !["Failed", "Expired", "Stopped"].includes(r.status), onclick: replay, title: "Run it again as a new task" }, "Replay")
        )
      );
      facts.replaceChildren(
        ...[
        fact("Function", h("a", { href: "#/tasks?function=" + encodeURIComponent(r.function) }, r.function)),
        fact("User", r.user),
        fact("Created", when(r.created_at)),
        fact("Not before", when(r.not_before)),
        fact("Started", when(r.started_at)),
        fact("Finished", when(r.finished_at)),
        fact("Attempts", num(r.attempts)),
        fact("Queue time", fmtMs(r.queue_ms)),
        fact("Last attempt", fmtMs(r.duration_ms)),
        fact("Input size", num(r.input_size) + " bytes"),
        r.heartbeat_at ? fact("Last heartbeat", when(r.heartbeat_at)) : null,
        r.replay_of ? fact("Replay of", link(r.replay_of)) : null,
        r.triggered_by ? fact("Triggered by", link(r.triggered_by)) : null,
        ].filter(Boolean)
      );
      errorBox.replaceChildren(
        r.error ? h("div.errbox", { style: "margin-top:12px" }, h("span.type", null, r.error.type), h("span", null, r.error.message)) : ""
      );
      tlBox.replaceChildren(...[].concat(timelineView(tl)));
      if (!ioShown) {
        ioShown = true;
        ioBox.replaceChildren(
          h("div.panel", null, h("h2", null, "Input"), h("div.panel-body", null, dataViewer("input", r.input ?? null, r.input_base64 ?? null, false))),
          h("div.panel#result-panel", null, h("h2", null, "Result"), h("div.panel-body#result-body"))
        );
      }
      const rb = $("#result-body");
      const resKey = JSON.stringify([r.result, r.result_base64]);
      if (rb && rb.dataset.key !== resKey) {
        rb.dataset.key = resKey;
        rb.replaceChildren(dataViewer("result", r.result ?? null, r.result_base64 ?? null, r.result_truncated));
      }
      destBox.replaceChildren(
        r.destination
          ? h("div.panel", null, h("h2", null, "Destination"), h("div.panel-body", null, h("pre.data#destination", null, JSON.stringify(r.destination, null, 2))))
          : ""
      );
      history.replaceChildren(
        ...r.events.map((e) => h("tr", null, h("td", null, badge(e.status)), h("td", null, when(e.at)), h("td.mono", null, e.detail || "")))
      );
      // Finished: one more read with the input shown already, then no more.
      if (done && !firstRun) p.stop();
    });
    return p;
  }
  const TERMINAL = new Set(["Succeeded", "Failed", "Stopped", "Expired", "Invalid"]);

  // ---------- functions ----------

  const LIVE_KEYS = ["queued", "running", "delayed", "concurrency_limit"];

  function switchButton(on, label, onToggle) {
    const b = h("button.switch", { type: "button", role: "switch", "aria-checked": String(on), "aria-label": label, title: on ? "Enabled: click to disable" : "Disabled: click to enable" });
    b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        await onToggle(!on);
      } finally {
        b.disabled = false;
      }
    });
    return b;
  }

  function functionsPage(main) {
    const body = h("tbody");
    const notice = h("div");
    append(main, [
      pageHead("Functions", h("span.spacer"), h("button#new-function", { type: "button", onclick: () => newFunction() }, "New function")),
      notice,
      h(
        "div.panel",
        null,
        h(
          "div.scroll",
          null,
          h(
            "table.grid.cards#functions",
            null,
            h("thead", null, h("tr", null, h("th", null, "Function"), h("th", null, "Enabled"), h("th", null, "Endpoint"), h("th.num", null, "Concurrency"), h("th", null, "Rate limit"), h("th.num", null, "Attempts"), h("th.num", null, "Timeout"), h("th", null, ""))),
            body
          )
        )
      ),
    ]);
    const save = async (name, spec) => {
      const clean = Object.assign({}, spec);
      for (const k of LIVE_KEYS) delete clean[k];
      const r = await api("PUT", "/v1/functions/" + encodeURIComponent(name), clean);
      functionNames = null;
      if (r.signing_secret) toast("Saved. Its signing secret, shown once: " + r.signing_secret);
      else toast("Saved " + name);
      p.now();
      return r;
    };
    const newFunction = () =>
      editJson("New function", "Give the name and policy (CONTRACT §6); only endpoint is required.", { name: "my-function", endpoint: "http://127.0.0.1:8000/task" }, async (v) => {
        const name = v.name;
        if (!name) throw new Error("name: give the function a name");
        await save(name, v);
      });
    const p = poller(5000, async () => {
      let list;
      try {
        list = (await api("GET", "/v1/functions")).functions;
      } catch (e) {
        notice.replaceChildren(errorNotice(e));
        return;
      }
      notice.replaceChildren();
      if (!list.length) {
        body.replaceChildren(h("tr", null, h("td.empty", { colspan: 8 }, "No functions yet.")));
        return;
      }
      body.replaceChildren(
        ...list.map((f) =>
          h(
            "tr",
            { dataset: { function: f.name } },
            h("td.head", { "data-label": "Function" }, h("a", { href: "#/tasks?function=" + encodeURIComponent(f.name) }, f.name)),
            h(
              "td",
              { "data-label": "Enabled" },
              switchButton(f.enabled, "Enable " + f.name, async (on) => {
                try {
                  const cur = await api("GET", "/v1/functions/" + encodeURIComponent(f.name));
                  cur.enabled = on;
                  await save(f.name, cur);
                  toast(`${f.name} ${on ? "enabled" : "disabled"}`);
                } catch (e) {
                  toast(e.message, true);
                }
              })
            ),
            h("td.mono", { "data-label": "Endpoint" }, f.endpoint),
            h("td.num", { "data-label": "Concurrency" }, f.concurrency.adaptive ? `${f.concurrency.min}–${f.concurrency.max} adaptive` : num(f.concurrency.max)),
            h("td", { "data-label": "Rate limit" }, rate(f.rate_limit) || h("span.zero", null, "none"), f.user_rate_limit ? h("span.muted", null, " · " + rate(f.user_rate_limit) + " per user") : null),
            h("td.num", { "data-label": "Attempts" }, num(f.max_attempts)),
            h("td.num", { "data-label": "Timeout" }, f.timeout),
            h(
              "td",
              { "data-label": "" },
              h("a.btn.small", { href: "#/tasks?function=" + encodeURIComponent(f.name) }, "Tasks"),
              " ",
              h(
                "button.small.edit",
                {
                  type: "button",
                  onclick: async () => {
                    let cur;
                    try {
                      cur = await api("GET", "/v1/functions/" + encodeURIComponent(f.name));
                    } catch (e) {
                      return toast(e.message, true);
                    }
                    for (const k of LIVE_KEYS) delete cur[k];
                    editJson(`Edit ${f.name}`, "The whole policy: keys left out take their defaults. The signing secret is kept unless you give one.", cur, (v) => save(f.name, v));
                  },
                },
                "Edit"
              )
            )
          )
        )
      );
    });
    return p;
  }

  // ---------- schedules ----------

  function schedulesPage(main) {
    const body = h("tbody");
    const notice = h("div");
    const save = async (name, v) => {
      const clean = Object.assign({}, v);
      for (const k of ["name", "next_fire_at", "last_fired_at", "created_at"]) delete clean[k];
      await api("PUT", "/v1/schedules/" + encodeURIComponent(name), clean);
      toast("Saved " + name);
      p.now();
    };
    append(main, [
      pageHead(
        "Schedules",
        h("span.spacer"),
        h(
          "button#new-schedule",
          {
            type: "button",
            onclick: async () => {
              const names = await loadFunctionNames();
              editJson("New schedule", "A name, a function, and cron or every (CONTRACT, schedules).", { name: "nightly", function: names[0] || "my-function", cron: "0 3 * * *", input: "" }, async (v) => {
                if (!v.name) throw new Error("name: give the schedule a name");
                await save(v.name, v);
              });
            },
          },
          "New schedule"
        )
      ),
      notice,
      h(
        "div.panel",
        null,
        h(
          "div.scroll",
          null,
          h(
            "table.grid.cards#schedules",
            null,
            h("thead", null, h("tr", null, h("th", null, "Schedule"), h("th", null, "Enabled"), h("th", null, "Function"), h("th", null, "When"), h("th", null, "Next"), h("th", null, "Last fired"), h("th", null, ""))),
            body
          )
        )
      ),
    ]);
    const p = poller(5000, async () => {
      let list;
      try {
        list = (await api("GET", "/v1/schedules")).schedules;
      } catch (e) {
        notice.replaceChildren(errorNotice(e));
        return;
      }
      notice.replaceChildren();
      if (!list.length) {
        body.replaceChildren(h("tr", null, h("td.empty", { colspan: 7 }, "No schedules yet.")));
        return;
      }
      body.replaceChildren(
        ...list.map((sc) =>
          h(
            "tr",
            { dataset: { schedule: sc.name } },
            h("td.head", { "data-label": "Schedule" }, sc.name),
            h(
              "td",
              { "data-label": "Enabled" },
              switchButton(sc.enabled, "Enable " + sc.name, async (on) => {
                try {
                  const cur = await api("GET", "/v1/schedules/" + encodeURIComponent(sc.name));
                  cur.enabled = on;
                  await save(sc.name, cur);
                  toast(`${sc.name} ${on ? "enabled" : "disabled"}`);
                } catch (e) {
                  toast(e.message, true);
                }
              })
            ),
            h("td", { "data-label": "Function" }, h("a", { href: "#/tasks?function=" + encodeURIComponent(sc.function) }, sc.function)),
            h("td.mono", { "data-label": "When" }, sc.cron ? sc.cron + (sc.time_zone ? " " + sc.time_zone : "") : "every " + sc.every),
            h("td", { "data-label": "Next", title: sc.next_fire_at || "" }, sc.next_fire_at ? [when(sc.next_fire_at), h("span.muted.small", null, " " + ago(sc.next_fire_at))] : h("span.muted", null, "–")),
            h("td", { "data-label": "Last fired" }, when(sc.last_fired_at)),
            h(
              "td",
              { "data-label": "" },
              h(
                "button.small.edit",
                {
                  type: "button",
                  onclick: async () => {
                    let cur;
                    try {
                      cur = await api("GET", "/v1/schedules/" + encodeURIComponent(sc.name));
                    } catch (e) {
                      return toast(e.message, true);
                    }
                    for (const k of ["name", "next_fire_at", "last_fired_at", "created_at"]) delete cur[k];
                    editJson(`Edit ${sc.name}`, "The whole schedule.", cur, (v) => save(sc.name, v));
                  },
                },
                "Edit"
              )
            )
          )
        )
      );
    });
    return p;
  }

  // ---------- keyboard ----------

  let selected = -1;
  function rows() {
    return $$("#main table.grid tbody tr").filter((r) => r.querySelector("a, button"));
  }
  function select(i) {
    const rs = rows();
    if (!rs.length) return;
    selected = Math.max(0, Math.min(rs.length - 1, i));
    rs.forEach((r, j) => r.classList.toggle("selected", j === selected));
    rs[selected].scrollIntoView({ block: "nearest" });
  }
  function setupKeys() {
    let pendingG = 0;
    document.addEventListener("keydown", (ev) => {
      if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
      const t = ev.target;
      const typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
      if (typing || document.querySelector("dialog[open]")) return;
      const k = ev.key;
      if (pendingG && Date.now() - pendingG < 1200) {
        pendingG = 0;
        const to = { o: "#/", t: "#/tasks", f: "#/functions", s: "#/schedules" }[k];
        if (to) {
          ev.preventDefault();
          go(to);
        }
        return;
      }
      if (k === "g") pendingG = Date.now();
      else if (k === "/") {
        ev.preventDefault();
        const f = $("#f-id");
        if (f) f.focus();
        else {
          go("#/tasks");
          setTimeout(() => $("#f-id") && $("#f-id").focus(), 0);
        }
      } else if (k === "?") $("#help").showModal();
      else if (k === "j") select(selected + 1);
      else if (k === "k") select(selected - 1);
      else if (k === "Enter" && selected >= 0) {
        const a = rows()[selected] && rows()[selected].querySelector("a");
        if (a) a.click();
      } else if (k === "r" && view.now) view.now();
    });
    $("#help-open").addEventListener("click", () => $("#help").showModal());
  }

  // ---------- start ----------

  function start() {
    setupLogin();
    setupKeys();
    window.addEventListener("hashchange", route);
    route();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
