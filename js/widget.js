// @ts-check
/**
 * Front end of dockrion_nb.widget.RunView: plain ES module, no bundler, no build step.
 *
 * The kernel sends batches of events as custom messages:
 *   {kind: "events", prev, last, events: [...]}   live batches, covering sequences (prev, last]
 *   {kind: "replay", after, last, more, events}     answers to {kind: "replay", after} requests
 * Consecutive tokens arrive merged ({type: "token", sequence, parts: [...], dt: [...]}).
 * One store per model (anywidget's initialize hook) keeps every event, so a view created later,
 * or a second view, shows the whole run; a store that notices it missed messages (a page
 * reload) asks the kernel for them again.
 *
 * SECURITY: event data is untrusted. It reaches the DOM only through textContent and
 * createTextNode, never innerHTML; numbers from events are checked before they go into styles.
 */

/**
 * @typedef {{[key: string]: any}} Wire
 * @typedef {{key: number, seq: number, type: string, ts: number, data: Wire,
 *            summary?: string, hay?: string}} Rec
 * @typedef {{get(name: string): any, set?(name: string, value: any): void,
 *            on(event: string, cb: Function): void, off(event: string, cb?: Function): void,
 *            send(content: any, callbacks?: any, buffers?: any): void}} Model
 */

const ROW_H = 22; // px, fixed: the event log renders only the rows in view
const OVERSCAN = 8;
const STEP_ROWS = 200; // waterfall rows kept in the DOM
const OBJECT_ROWS = 200; // checkpoint/custom blocks kept in the DOM
const BOX_ROWS = 20; // error/cancel/gap boxes kept in the DOM
const SUMMARY_MAX = 200;

/**
 * Stores by widget manager (one per kernel connection), then by the widget's `_store_key`.
 * anywidget hands `initialize` and each `render` a different proxy of the same model, so the
 * proxy itself cannot be the key.
 * @type {WeakMap<object, Map<string, RunStore>>}
 */
const STORES = new WeakMap();
const NO_MANAGER = {};
/** @type {WeakMap<Model, RunStore>} fallback for a model without a `_store_key` */
const BY_MODEL = new WeakMap();

/**
 * @param {string} tag
 * @param {string} [cls]
 * @param {string | null} [text]
 * @returns {HTMLElement}
 */
function h(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = String(text);
  return e;
}

/** @param {unknown} v */
function num(v) {
  return typeof v === "number" && Number.isFinite(v) ? v : NaN;
}

/** @param {unknown} v */
function str(v) {
  return v == null ? "" : typeof v === "string" ? v : JSON.stringify(v);
}

/** @param {string} s @param {number} n */
function clip(s, n) {
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

/** @param {unknown} v */
function pretty(v) {
  try {
    return JSON.stringify(v, null, 2) ?? String(v);
  } catch {
    return String(v);
  }
}

/** @param {number} ms */
function fmtDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60000)} min ${Math.floor((ms % 60000) / 1000)} s`;
  if (ms < 86_400_000) return `${Math.floor(ms / 3_600_000)} h ${Math.floor((ms % 3_600_000) / 60000)} min`;
  return `${Math.floor(ms / 86_400_000)} d ${Math.floor((ms % 86_400_000) / 3_600_000)} h`;
}

/** Time since the run's first event, compact enough for the log's time column. @param {number} ms */
function fmtRel(ms) {
  if (!Number.isFinite(ms)) return "";
  const sign = ms < 0 ? "-" : "+";
  const a = Math.abs(ms);
  if (a < 100_000) return `${sign}${(a / 1000).toFixed(3)}s`;
  if (a < 3_600_000) return `${sign}${Math.floor(a / 60000)}m${String(Math.floor(a / 1000) % 60).padStart(2, "0")}s`;
  if (a < 360_000_000) return `${sign}${Math.floor(a / 3_600_000)}h${String(Math.floor(a / 60000) % 60).padStart(2, "0")}m`;
  return `${sign}${Math.floor(a / 86_400_000)}d`;
}

const BASE_FIELDS = new Set(["id", "type", "run_id", "sequence", "timestamp"]);

/** One line for the event log, as Python's dockrion_nb.events.summarize. @param {Rec} r */
function summarize(r) {
  const d = r.data;
  let s;
  switch (r.type) {
    case "token":
      s = JSON.stringify(str(d.content)) + (d.finish_reason ? ` (${str(d.finish_reason)})` : "");
      break;
    case "progress": {
      const p = num(d.progress);
      s = `${str(d.step)} ${Number.isNaN(p) ? "?" : Math.round(p * 100)}%` +
        (d.message ? ` ${str(d.message)}` : "");
      break;
    }
    case "step": {
      const ms = num(d.duration_ms);
      s = str(d.node_name) + (Number.isNaN(ms) ? "" : ` ${ms} ms`);
      const ik = Array.isArray(d.input_keys) ? d.input_keys.map(str).join(", ") : "";
      const ok = Array.isArray(d.output_keys) ? d.output_keys.map(str).join(", ") : "";
      if (ik || ok) s += ` [${ik}] → [${ok}]`;
      break;
    }
    case "checkpoint":
      s = `${str(d.name)} ${clip(JSON.stringify(d.data ?? {}), 80)}`;
      break;
    case "complete": {
      const l = num(d.latency_seconds);
      s = "complete" + (Number.isNaN(l) ? "" : ` in ${l.toFixed(2)} s`) +
        ` ${clip(JSON.stringify(d.output ?? {}), 60)}`;
      break;
    }
    case "error":
      s = `${str(d.code)}: ${str(d.error)}`;
      break;
    case "cancelled":
      s = str(d.reason);
      break;
    case "started":
      s = [d.agent_name, d.framework].filter((x) => x).map(str).join(" ");
      break;
    case "heartbeat":
      s = "";
      break;
    case "gap":
      s = `missed ${str(d.from_sequence)}..${str(d.to_sequence ?? "")}: ${str(d.reason)}`;
      break;
    default: {
      const rest = /** @type {Wire} */ ({});
      for (const k of Object.keys(d)) if (!BASE_FIELDS.has(k)) rest[k] = d[k];
      s = Object.keys(rest).length ? JSON.stringify(rest) : "";
    }
  }
  return clip(s, SUMMARY_MAX);
}

/** @param {Rec} r */
function summaryOf(r) {
  if (r.summary === undefined) r.summary = summarize(r);
  return r.summary;
}

/** @param {Rec} r */
function hayOf(r) {
  if (r.hay === undefined) {
    let json = "";
    try {
      json = JSON.stringify(r.data);
    } catch {
      /* keep empty */
    }
    r.hay = `${r.seq} ${r.type} ${summaryOf(r)} ${json}`.toLowerCase();
  }
  return r.hay;
}

/** The full event as stored by the kernel (merged tokens are split back). @param {Rec} r */
function fullEvent(r) {
  const out = /** @type {Wire} */ ({ ...r.data });
  if (out.timestamp === undefined && Number.isFinite(r.ts)) {
    out.timestamp = new Date(r.ts).toISOString();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The per-model store
// ---------------------------------------------------------------------------------------------

class RunStore {
  /** @param {Model} model */
  constructor(model) {
    this.model = model;
    /** @type {Rec[]} */
    this.records = [];
    /** @type {Set<number | string>} dedupe keys: sequences, or "id:..." for unnumbered events */
    this.seen = new Set();
    this.maxKey = -Infinity;
    this.floorKey = -Infinity; // records below were trimmed by max_events
    this.total = 0; // unique events received, trimmed ones included
    this.chain = 0; // every event the kernel sent up to this sequence is here
    /** @type {[number, number][]} message ranges received past a hole in the chain */
    this.ranges = [];
    /** @type {number | null} */
    this.requested = null;
    this.version = 0; // bumps on every change
    this.resetVersion = 0; // bumps when views must rebuild (insert before the tail, trim)
    /** @type {Set<() => void>} */
    this.listeners = new Set();
    this.stats = { msgs: 0, events: 0, applyMs: 0, firstMsgAt: 0, lastMsgAt: 0, requests: 0 };
    this.clearDerived();
  }

  clearDerived() {
    /** @type {Map<string, number>} */
    this.typeCounts = new Map();
    this.tokenText = "";
    this.tokenCount = 0;
    /** @type {string | null} */
    this.finishReason = null;
    /** @type {Map<string, Rec>} latest progress event per step */
    this.progress = new Map();
    this.progressVersion = 0;
    /** @type {Rec[]} */
    this.steps = [];
    /** @type {Rec[]} checkpoints, custom events, complete output */
    this.objects = [];
    /** @type {Rec[]} errors, cancellations, gaps */
    this.boxes = [];
    /** @type {Rec | null} */
    this.started = null;
    /** @type {Rec | null} */
    this.terminal = null;
    this.heartbeats = 0;
    this.lastHeartbeat = NaN;
    this.firstTs = NaN;
    this.lastTs = NaN;
  }

  /** @param {() => void} fn */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  notify() {
    this.version++;
    for (const fn of this.listeners) fn();
  }

  /** @param {any} msg */
  handle(msg) {
    if (!msg || typeof msg !== "object") return;
    const t0 = performance.now();
    this.stats.msgs++;
    this.stats.lastMsgAt = Date.now();
    if (!this.stats.firstMsgAt) this.stats.firstMsgAt = this.stats.lastMsgAt;
    const entries = Array.isArray(msg.events) ? msg.events : [];
    if (msg.kind === "events") {
      this.apply(entries);
      this.cover(num(msg.prev), num(msg.last));
    } else if (msg.kind === "replay") {
      this.requested = null;
      this.apply(entries);
      this.cover(num(msg.after), num(msg.last));
      if (msg.more) this.request(true);
    } else {
      return;
    }
    this.checkChain();
    this.stats.applyMs += performance.now() - t0;
    this.notify();
  }

  /** Mark sequences (a, b] as received. @param {number} a @param {number} b */
  cover(a, b) {
    if (Number.isNaN(a) || Number.isNaN(b)) return;
    if (a <= this.chain) this.chain = Math.max(this.chain, b);
    else this.ranges.push([a, b]);
    let merged = true;
    while (merged && this.ranges.length) {
      merged = false;
      for (let i = 0; i < this.ranges.length; i++) {
        if (this.ranges[i][0] <= this.chain) {
          this.chain = Math.max(this.chain, this.ranges[i][1]);
          this.ranges.splice(i, 1);
          merged = true;
          break;
        }
      }
    }
  }

  /** Ask the kernel again for what this store missed (page reload, late model). */
  checkChain() {
    const sent = num(this.model.get("sent_upto"));
    if (this.ranges.length || (!Number.isNaN(sent) && sent > this.chain)) this.request(false);
  }

  /** @param {boolean} more */
  request(more) {
    if (this.requested !== null) return;
    if (!more && this.lastRequestChain === this.chain) return; // no progress: do not loop
    this.requested = this.chain;
    this.lastRequestChain = this.chain;
    this.stats.requests++;
    try {
      this.model.send({ kind: "replay", after: this.chain });
    } catch {
      this.requested = null;
    }
  }

  /** @param {Wire[]} entries */
  apply(entries) {
    /** @type {Rec[]} */
    const late = [];
    let inOrder = true;
    /** @param {Rec} r @param {number | string} dk */
    const add = (r, dk) => {
      if (this.seen.has(dk) || r.key < this.floorKey) return;
      this.seen.add(dk);
      this.total++;
      this.stats.events++;
      if (r.key > this.maxKey && inOrder) {
        this.maxKey = r.key;
        this.records.push(r);
        this.derive(r);
      } else {
        inOrder = false;
        late.push(r);
      }
    };
    for (const w of entries) {
      if (!w || typeof w !== "object" || typeof w.type !== "string") continue;
      const seq = num(w.sequence);
      const ts = Date.parse(str(w.timestamp));
      if (w.type === "token" && Array.isArray(w.parts) && seq > 0) {
        const dt = Array.isArray(w.dt) ? w.dt : [];
        const n = w.parts.length;
        for (let i = 0; i < n; i++) {
          const d = num(dt[i]);
          /** @type {Wire} */
          const data = { type: "token", sequence: seq + i, content: str(w.parts[i]) };
          if (i === n - 1 && w.finish_reason != null) data.finish_reason = w.finish_reason;
          const r = { key: seq + i, seq: seq + i, type: "token", ts: ts + (Number.isNaN(d) ? 0 : d), data };
          add(r, seq + i);
        }
        continue;
      }
      let key = seq > 0 ? seq : NaN;
      /** @type {number | string} */
      let dk = seq;
      if (!(seq > 0)) {
        const from = num(w.from_sequence);
        key = w.type === "gap" && from > 0 ? from - 0.5 : Math.max(this.maxKey, 0);
        dk = "id:" + str(w.id);
      }
      add({ key, seq: seq > 0 ? seq : 0, type: w.type, ts, data: w }, dk);
    }
    if (late.length) {
      const all = this.records.concat(late);
      all.sort((a, b) => a.key - b.key);
      this.records = all;
      this.maxKey = all.length ? all[all.length - 1].key : -Infinity;
      this.rebuild();
    }
    this.trim();
  }

  trim() {
    const cap = num(this.model.get("max_events"));
    if (!(cap > 0) || this.records.length <= cap + Math.max(64, cap >> 2)) return;
    const drop = this.records.length - cap;
    for (let i = 0; i < drop; i++) {
      const r = this.records[i];
      this.seen.delete(r.seq > 0 ? r.seq : "id:" + str(r.data.id));
    }
    this.records.splice(0, drop);
    this.floorKey = this.records.length ? this.records[0].key : this.floorKey;
    this.resetVersion++;
  }

  rebuild() {
    this.clearDerived();
    for (const r of this.records) this.derive(r);
    this.resetVersion++;
  }

  /** Fold one record, in sequence order, into the panels' state. @param {Rec} r */
  derive(r) {
    this.typeCounts.set(r.type, (this.typeCounts.get(r.type) || 0) + 1);
    if (Number.isFinite(r.ts)) {
      if (!(r.ts >= this.firstTs)) this.firstTs = r.ts;
      if (!(r.ts <= this.lastTs)) this.lastTs = r.ts;
    }
    const d = r.data;
    switch (r.type) {
      case "token":
        this.tokenText += str(d.content);
        this.tokenCount++;
        if (d.finish_reason != null) this.finishReason = str(d.finish_reason);
        break;
      case "progress":
        this.progress.set(str(d.step), r);
        this.progressVersion++;
        break;
      case "step":
        this.steps.push(r);
        break;
      case "checkpoint":
        this.objects.push(r);
        break;
      case "started":
        this.started = r;
        break;
      case "heartbeat":
        this.heartbeats++;
        this.lastHeartbeat = r.ts;
        break;
      case "complete":
        if (!this.terminal) this.terminal = r;
        this.objects.push(r);
        break;
      case "error":
      case "cancelled":
        if (!this.terminal) this.terminal = r;
        this.boxes.push(r);
        break;
      case "gap":
        this.boxes.push(r);
        break;
      default:
        this.objects.push(r);
    }
  }

  /** Status from the events; the kernel's trait when there are none yet. */
  status() {
    if (this.terminal) return this.terminal.type;
    const s = str(this.model.get("status"));
    if (["complete", "error", "cancelled"].includes(s)) return s;
    return this.records.length ? "running" : s || "waiting";
  }
}

/** @param {Model} model */
function storeFor(model) {
  const key = str(model.get("_store_key"));
  if (!key) {
    let store = BY_MODEL.get(model);
    if (!store) BY_MODEL.set(model, (store = new RunStore(model)));
    return store;
  }
  const scope = /** @type {any} */ (model).widget_manager ?? NO_MANAGER;
  let stores = STORES.get(scope);
  if (!stores) STORES.set(scope, (stores = new Map()));
  let store = stores.get(key);
  if (!store) stores.set(key, (store = new RunStore(model)));
  return store;
}

/** @param {Model} model */
function dropStore(model) {
  const key = str(model.get("_store_key"));
  const stores = STORES.get(/** @type {any} */ (model).widget_manager ?? NO_MANAGER);
  if (key && stores) stores.delete(key);
  BY_MODEL.delete(model);
}

// ---------------------------------------------------------------------------------------------
// A view
// ---------------------------------------------------------------------------------------------

class RunViewUI {
  /** @param {Model} model @param {HTMLElement} el @param {RunStore} store */
  constructor(model, el, store) {
    this.model = model;
    this.store = store;
    this.el = el;
    this.resetVersion = -1;
    this.drawnVersion = -1;
    this.frame = 0;
    /** @type {Set<string>} */
    this.hidden = new Set();
    this.query = "";
    this.follow = true;
    /** @type {number[]} indices into store.records that pass the filter */
    this.filtered = [];
    this.scanned = 0;
    /** @type {Rec | null} */
    this.selected = null;
    this.programmaticScroll = false;
    this.stats = { draws: 0, drawMs: 0, lastDrawAt: 0, renderedEvents: 0 };
    this.build();
    this.unsubscribe = store.subscribe(() => this.schedule());
    /** @type {[string, Function][]} */
    this.modelHandlers = [];
    for (const name of ["status", "run_status", "connection", "note", "backend", "event_count", "latency_seconds",
      "can_cancel"]) {
      const fn = () => this.schedule();
      model.on(`change:${name}`, fn);
      this.modelHandlers.push([`change:${name}`, fn]);
    }
    this.ticker = setInterval(() => this.drawHeader(), 1000);
    this.draw();
  }

  destroy() {
    this.unsubscribe();
    for (const [ev, fn] of this.modelHandlers) this.model.off(ev, fn);
    clearInterval(this.ticker);
    if (this.frame) cancelAnimationFrame(this.frame);
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  build() {
    const root = h("div", "drnb-root");
    this.root = root;
    /** @type {any} */ (root).__drnbView = this;

    // header
    const head = h("div", "drnb-header");
    this.hRun = h("span", "drnb-run");
    this.hBackend = h("span", "drnb-backend");
    this.hStatus = h("span", "drnb-badge");
    this.hRunStatus = h("span", "drnb-run-status");
    this.hConn = h("span", "drnb-conn");
    this.hCount = h("span", "drnb-count");
    this.hElapsed = h("span", "drnb-elapsed");
    this.hLatency = h("span", "drnb-latency");
    this.hPulse = h("span", "drnb-pulse");
    this.hPulse.setAttribute("aria-label", "heartbeat");
    this.hPulseText = h("span", "drnb-pulse-text");
    const pulse = h("span", "drnb-heartbeat");
    pulse.append(this.hPulse, this.hPulseText);
    this.hAgent = h("span", "drnb-agent");
    // shown when the kernel says the view's source can cancel the run (a Dockrion server)
    this.cancelBtn = /** @type {HTMLButtonElement} */ (h("button", "drnb-btn drnb-cancel", "cancel run"));
    this.cancelBtn.type = "button";
    this.cancelBtn.hidden = true;
    this.cancelBtn.addEventListener("click", () => {
      this.cancelBtn.disabled = true;
      this.cancelBtn.textContent = "cancelling…";
      this.model.send({ kind: "cancel" });
    });
    head.append(this.hRun, this.hStatus, this.hRunStatus, this.hConn, this.hCount, this.hElapsed, this.hLatency,
      pulse, this.hBackend, this.hAgent, this.cancelBtn);
    this.hNote = h("div", "drnb-note");

    // errors, cancellations, gaps
    this.boxes = h("div", "drnb-boxes");
    this.boxesNote = h("div", "drnb-more");

    // token stream
    this.tokSec = h("section", "drnb-section drnb-tokens");
    const tokBar = h("div", "drnb-bar-title");
    tokBar.append(h("span", "drnb-title", "Output"));
    this.tokInfo = h("span", "drnb-muted");
    this.monoBtn = /** @type {HTMLButtonElement} */ (h("button", "drnb-btn drnb-mono-toggle", "monospace"));
    this.monoBtn.type = "button";
    this.monoBtn.addEventListener("click", () => {
      this.tokText.classList.toggle("drnb-mono");
      this.monoBtn.classList.toggle("drnb-on");
    });
    this.tokFinish = h("span", "drnb-finish");
    tokBar.append(this.tokInfo, this.tokFinish, this.monoBtn);
    this.tokText = h("div", "drnb-token-text");
    this.tokLen = 0;
    this.tokSec.append(tokBar, this.tokText);

    // progress
    this.progSec = h("section", "drnb-section drnb-progress");
    this.progSec.append(h("div", "drnb-title", "Progress"));
    this.progList = h("div", "drnb-progress-list");
    this.progSec.append(this.progList);
    /** @type {Map<string, {row: HTMLElement, fill: HTMLElement, pct: HTMLElement, msg: HTMLElement}>} */
    this.progRows = new Map();
    this.progVersion = -1;

    // steps waterfall
    this.stepSec = h("section", "drnb-section drnb-steps");
    this.stepSec.append(h("div", "drnb-title", "Steps"));
    this.stepMore = h("div", "drnb-more");
    this.stepList = h("div", "drnb-step-list");
    this.stepSec.append(this.stepMore, this.stepList);
    /** @type {{rec: Rec, bar: HTMLElement}[]} */
    this.stepRows = [];
    this.stepsDrawn = 0;
    this.stepSpan = "";

    // checkpoints, custom events, output
    this.objSec = h("section", "drnb-section drnb-objects");
    this.objSec.append(h("div", "drnb-title", "Checkpoints and custom events"));
    this.objMore = h("div", "drnb-more");
    this.objList = h("div", "drnb-object-list");
    this.objSec.append(this.objMore, this.objList);
    this.objsDrawn = 0;
    this.boxesDrawn = 0;

    // event log
    this.logSec = h("section", "drnb-section drnb-log");
    const tools = h("div", "drnb-log-tools");
    tools.append(h("span", "drnb-title", "Events"));
    this.chips = h("span", "drnb-chips");
    /** @type {Map<string, HTMLButtonElement>} */
    this.chipEls = new Map();
    this.search = /** @type {HTMLInputElement} */ (h("input", "drnb-search"));
    this.search.type = "search";
    this.search.placeholder = "search events";
    this.search.addEventListener("input", () => {
      this.query = this.search.value.trim().toLowerCase();
      this.refilter();
    });
    this.followBtn = /** @type {HTMLButtonElement} */ (h("button", "drnb-btn drnb-follow", "pause"));
    this.followBtn.type = "button";
    this.followBtn.addEventListener("click", () => this.setFollow(!this.follow));
    this.logInfo = h("span", "drnb-muted drnb-log-info");
    tools.append(this.chips, this.search, this.followBtn, this.logInfo);
    this.viewport = h("div", "drnb-viewport");
    this.viewport.tabIndex = 0;
    this.spacer = h("div", "drnb-spacer");
    this.rowsEl = h("div", "drnb-rows");
    this.viewport.append(this.spacer, this.rowsEl);
    this.viewport.addEventListener("scroll", () => this.onScroll());
    this.rowsEl.addEventListener("click", (ev) => {
      const row = /** @type {HTMLElement | null} */ (ev.target instanceof Element ? ev.target.closest(".drnb-row") : null);
      if (!row) return;
      const i = Number(row.dataset.index);
      const rec = this.store.records[this.filtered[i]];
      this.select(rec && rec !== this.selected ? rec : null);
    });
    this.detail = h("div", "drnb-detail");
    this.detailTitle = h("div", "drnb-detail-title");
    const close = h("button", "drnb-btn drnb-detail-close", "close");
    close.addEventListener("click", () => this.select(null));
    const detailHead = h("div", "drnb-detail-head");
    detailHead.append(this.detailTitle, close);
    this.detailBody = h("pre", "drnb-json");
    this.detail.append(detailHead, this.detailBody);
    this.logSec.append(tools, this.viewport, this.detail);

    root.append(head, this.hNote, this.boxes, this.boxesNote, this.tokSec, this.progSec,
      this.stepSec, this.objSec, this.logSec);
    this.el.replaceChildren(root);
  }

  draw() {
    const t0 = performance.now();
    const s = this.store;
    if (this.resetVersion !== s.resetVersion) {
      this.resetVersion = s.resetVersion;
      this.resetPanels();
    }
    // The log reads layout (scroll position, viewport height), so it goes first, while the
    // layout is still clean; the other panels only write.
    this.drawLog();
    this.drawHeader();
    this.drawBoxes();
    this.drawTokens();
    this.drawProgress();
    this.drawSteps();
    this.drawObjects();
    this.drawnVersion = s.version;
    this.stats.draws++;
    this.stats.drawMs += performance.now() - t0;
    this.stats.lastDrawAt = Date.now();
    this.stats.renderedEvents = s.records.length;
    this.root.dataset.events = String(s.records.length);
    this.root.dataset.version = String(s.version);
  }

  resetPanels() {
    this.tokText.replaceChildren();
    this.tokLen = 0;
    this.progList.replaceChildren();
    this.progRows.clear();
    this.progVersion = -1;
    this.stepList.replaceChildren();
    this.stepRows = [];
    this.stepsDrawn = 0;
    this.stepSpan = "";
    this.objList.replaceChildren();
    this.objsDrawn = 0;
    this.boxes.replaceChildren();
    this.boxesDrawn = 0;
    this.filtered = [];
    this.scanned = 0;
  }

  drawHeader() {
    const s = this.store;
    const m = this.model;
    const status = s.status();
    const conn = str(m.get("connection")) || "live";
    this.hRun.textContent = str(m.get("run_id"));
    this.hBackend.textContent = m.get("backend") ? `backend: ${str(m.get("backend"))}` : "";
    this.hStatus.textContent = status;
    this.hStatus.dataset.status = status;
    const runStatus = str(m.get("run_status"));
    this.hRunStatus.textContent = runStatus ? `run: ${runStatus}` : "";
    this.hRunStatus.hidden = !runStatus;
    this.hConn.textContent = conn;
    this.hConn.dataset.conn = conn;
    this.root.dataset.status = status;
    this.root.dataset.conn = conn;
    const n = Math.max(s.total, num(m.get("event_count")) || 0);
    this.hCount.textContent = `${n} event${n === 1 ? "" : "s"}`;
    let elapsed = s.lastTs - s.firstTs;
    if (status === "running" && conn === "live" && Number.isFinite(s.firstTs)) {
      elapsed = Math.max(elapsed, Date.now() - s.firstTs);
    }
    this.hElapsed.textContent = Number.isFinite(elapsed) ? `elapsed ${fmtDuration(elapsed)}` : "";
    let latency = "";
    if (status === "complete") {
      const fromEvent = s.terminal ? num(s.terminal.data.latency_seconds) : NaN;
      const fromTrait = num(m.get("latency_seconds"));
      const sec = !Number.isNaN(fromEvent) ? fromEvent : !Number.isNaN(fromTrait) ? fromTrait
        : (s.lastTs - s.firstTs) / 1000;
      latency = Number.isFinite(sec) ? `latency ${fmtDuration(sec * 1000)}` : "";
    }
    this.hLatency.textContent = latency;
    this.hLatency.hidden = !latency;
    if (s.heartbeats) {
      const age = Date.now() - s.lastHeartbeat;
      this.hPulseText.textContent = `${s.heartbeats} heartbeat${s.heartbeats === 1 ? "" : "s"}` +
        (Number.isFinite(age) && age >= 0 && status === "running" ? `, last ${fmtDuration(age)} ago` : "");
      if (this.pulsedAt !== s.heartbeats) {
        this.pulsedAt = s.heartbeats;
        this.hPulse.classList.add("drnb-beat");
        // Web Animations restart without forcing a layout (a CSS class toggle would need one)
        this.hPulse.getAnimations?.().forEach((a) => a.cancel());
        this.hPulse.animate?.(
          [{ transform: "scale(1.8)", opacity: 1 }, { transform: "scale(1)", opacity: 0.5 }],
          { duration: 900, easing: "ease-out" },
        );
      }
    }
    this.hPulse.parentElement && (this.hPulse.parentElement.hidden = !s.heartbeats);
    const st = s.started ? s.started.data : null;
    this.hAgent.textContent = st ? [st.agent_name, st.framework].filter((x) => x).map(str).join(" · ") : "";
    const note = str(m.get("note"));
    this.cancelBtn.hidden = !m.get("can_cancel") || ["complete", "error", "cancelled"].includes(status);
    if (this.cancelBtn.disabled && note.startsWith("cancel failed")) {
      this.cancelBtn.disabled = false; // the kernel said why; the user may try again
      this.cancelBtn.textContent = "cancel run";
    }
    const missing = s.ranges.length ? "some earlier events are missing; asked the kernel to send them again" : "";
    this.hNote.textContent = [note, missing].filter((x) => x).join(" — ");
    this.hNote.hidden = !this.hNote.textContent;
  }

  drawBoxes() {
    const s = this.store;
    if (this.boxesDrawn === s.boxes.length) return;
    for (let i = this.boxesDrawn; i < s.boxes.length; i++) {
      const r = s.boxes[i];
      const d = r.data;
      const box = h("div", `drnb-box drnb-box-${r.type === "error" ? "error" : r.type === "gap" ? "gap" : "cancelled"}`);
      box.dataset.seq = String(r.seq);
      if (r.type === "error") {
        box.append(h("div", "drnb-box-title", `Error${d.code ? ` ${str(d.code)}` : ""}`));
        box.append(h("div", "drnb-box-message", str(d.error)));
        const details = d.details;
        if (details && typeof details === "object") {
          const { traceback, ...rest } = /** @type {Wire} */ (details);
          if (traceback != null) box.append(h("pre", "drnb-traceback", str(traceback)));
          if (Object.keys(rest).length) box.append(h("pre", "drnb-json", pretty(rest)));
        } else if (details != null) {
          box.append(h("pre", "drnb-json", str(details)));
        }
      } else if (r.type === "cancelled") {
        box.append(h("div", "drnb-box-title", "Cancelled"));
        if (d.reason) box.append(h("div", "drnb-box-message", str(d.reason)));
      } else {
        box.append(h("div", "drnb-box-title", "Missed events"));
        box.append(h("div", "drnb-box-message", summaryOf(r)));
      }
      this.boxes.append(box);
    }
    this.boxesDrawn = s.boxes.length;
    while (this.boxes.childElementCount > BOX_ROWS) this.boxes.firstElementChild?.remove();
    const hiddenBoxes = s.boxes.length - this.boxes.childElementCount;
    this.boxesNote.textContent = hiddenBoxes > 0 ? `${hiddenBoxes} earlier notices not shown (see the event log)` : "";
    this.boxesNote.hidden = hiddenBoxes <= 0;
  }

  drawTokens() {
    const s = this.store;
    this.tokSec.hidden = s.tokenCount === 0;
    if (s.tokenText.length > this.tokLen) {
      this.tokText.append(document.createTextNode(s.tokenText.slice(this.tokLen)));
      this.tokLen = s.tokenText.length;
      if (this.tokText.childNodes.length > 200) this.tokText.normalize();
    }
    this.tokInfo.textContent = `${s.tokenCount} tokens, ${s.tokenText.length} chars`;
    this.tokFinish.textContent = s.finishReason ? `finish: ${s.finishReason}` : "";
  }

  drawProgress() {
    const s = this.store;
    this.progSec.hidden = s.progress.size === 0;
    if (this.progVersion === s.progressVersion) return;
    this.progVersion = s.progressVersion;
    for (const [step, r] of s.progress) {
      let row = this.progRows.get(step);
      if (!row) {
        const el = h("div", "drnb-progress-row");
        const label = h("span", "drnb-progress-step", step);
        const track = h("span", "drnb-track");
        const fill = h("span", "drnb-fill");
        track.append(fill);
        const pct = h("span", "drnb-progress-pct");
        const msg = h("span", "drnb-progress-msg");
        el.append(label, track, pct, msg);
        this.progList.append(el);
        row = { row: el, fill, pct, msg };
        this.progRows.set(step, row);
      }
      let p = num(r.data.progress);
      p = Number.isNaN(p) ? 0 : Math.min(1, Math.max(0, p));
      row.fill.style.width = `${(p * 100).toFixed(1)}%`;
      row.pct.textContent = `${Math.round(p * 100)}%`;
      row.msg.textContent = str(r.data.message);
      row.row.dataset.done = p >= 1 ? "1" : "0";
    }
  }

  drawSteps() {
    const s = this.store;
    this.stepSec.hidden = s.steps.length === 0;
    if (!s.steps.length) return;
    for (let i = Math.max(this.stepsDrawn, s.steps.length - STEP_ROWS); i < s.steps.length; i++) {
      const r = s.steps[i];
      const d = r.data;
      const row = h("div", "drnb-step-row");
      row.dataset.seq = String(r.seq);
      const name = h("span", "drnb-step-name", str(d.node_name));
      const track = h("span", "drnb-step-track");
      const bar = h("span", "drnb-step-bar");
      track.append(bar);
      const ms = num(d.duration_ms);
      const dur = h("span", "drnb-step-dur", Number.isNaN(ms) ? "–" : fmtDuration(ms));
      const ik = Array.isArray(d.input_keys) ? d.input_keys.map(str).join(", ") : "";
      const ok = Array.isArray(d.output_keys) ? d.output_keys.map(str).join(", ") : "";
      const keys = h("span", "drnb-step-keys", ik || ok ? `in: ${ik || "–"}  out: ${ok || "–"}` : "");
      row.append(name, track, dur, keys);
      this.stepList.append(row);
      this.stepRows.push({ rec: r, bar });
    }
    this.stepsDrawn = s.steps.length;
    while (this.stepRows.length > STEP_ROWS) {
      this.stepRows.shift();
      this.stepList.firstElementChild?.remove();
    }
    const hiddenSteps = s.steps.length - this.stepRows.length;
    this.stepMore.textContent = hiddenSteps > 0 ? `${hiddenSteps} earlier steps not shown` : "";
    this.stepMore.hidden = hiddenSteps <= 0;
    // waterfall: each bar spans [end - duration, end] on the run's time axis
    let minStart = s.firstTs;
    let end = s.lastTs;
    for (const { rec } of this.stepRows) {
      const start = rec.ts - Math.max(0, num(rec.data.duration_ms) || 0);
      if (start < minStart) minStart = start; // clock skew between writers: keep it on screen
      if (rec.ts > end) end = rec.ts;
    }
    const span = Math.max(1, end - minStart);
    const key = `${minStart}|${span}|${this.stepRows.length}`;
    if (key === this.stepSpan) return;
    this.stepSpan = key;
    for (const { rec, bar } of this.stepRows) {
      const ms = Math.max(0, num(rec.data.duration_ms) || 0);
      const start = rec.ts - ms;
      const left = Number.isFinite(start) ? ((start - minStart) / span) * 100 : 0;
      const width = (ms / span) * 100;
      bar.style.left = `${Math.min(100, Math.max(0, left)).toFixed(2)}%`;
      bar.style.width = `${Math.min(100, Math.max(0.4, width)).toFixed(2)}%`;
    }
  }

  drawObjects() {
    const s = this.store;
    this.objSec.hidden = s.objects.length === 0;
    if (this.objsDrawn === s.objects.length) return;
    for (let i = Math.max(this.objsDrawn, s.objects.length - OBJECT_ROWS); i < s.objects.length; i++) {
      const r = s.objects[i];
      const d = r.data;
      const det = /** @type {HTMLDetailsElement} */ (h("details", "drnb-object"));
      det.dataset.type = r.type;
      det.dataset.seq = String(r.seq);
      const sum = h("summary", "drnb-object-summary");
      const label = r.type === "checkpoint" ? `checkpoint ${str(d.name)}`
        : r.type === "complete" ? "output (complete)" : r.type;
      sum.append(h("span", "drnb-object-label", label), h("span", "drnb-muted", ` #${r.seq} ${fmtRel(r.ts - s.firstTs)}`));
      const pre = h("pre", "drnb-json");
      det.append(sum, pre);
      det.addEventListener("toggle", () => {
        if (det.open && !pre.textContent) {
          const body = r.type === "checkpoint" ? d.data : r.type === "complete" ? d.output : fullEvent(r);
          pre.textContent = pretty(body ?? {});
        }
      });
      this.objList.append(det);
    }
    this.objsDrawn = s.objects.length;
    while (this.objList.childElementCount > OBJECT_ROWS) this.objList.firstElementChild?.remove();
    const hiddenObjs = s.objects.length - this.objList.childElementCount;
    this.objMore.textContent = hiddenObjs > 0 ? `${hiddenObjs} earlier entries not shown (see the event log)` : "";
    this.objMore.hidden = hiddenObjs <= 0;
  }

  // -- event log ------------------------------------------------------------------------------

  /** @param {Rec} r */
  passes(r) {
    if (this.hidden.has(r.type)) return false;
    return !this.query || hayOf(r).includes(this.query);
  }

  refilter() {
    this.filtered = [];
    this.scanned = 0;
    this.drawLog();
  }

  drawLog() {
    const s = this.store;
    const recs = s.records;
    for (let i = this.scanned; i < recs.length; i++) if (this.passes(recs[i])) this.filtered.push(i);
    this.scanned = recs.length;
    this.drawChips();
    const n = this.filtered.length;
    this.spacer.style.height = `${n * ROW_H}px`;
    this.logInfo.textContent = n === recs.length ? `${n}` : `${n} of ${recs.length}`;
    if (this.follow) {
      const top = Math.max(0, n * ROW_H - this.viewport.clientHeight);
      if (Math.abs(this.viewport.scrollTop - top) > 1) {
        this.programmaticScroll = true;
        this.viewport.scrollTop = top;
      }
    }
    this.drawRows();
  }

  drawChips() {
    const s = this.store;
    for (const [type, count] of s.typeCounts) {
      let chip = this.chipEls.get(type);
      if (!chip) {
        chip = /** @type {HTMLButtonElement} */ (h("button", "drnb-chip"));
        chip.type = "button";
        chip.dataset.type = type;
        const t = type;
        chip.addEventListener("click", () => {
          if (this.hidden.has(t)) this.hidden.delete(t);
          else this.hidden.add(t);
          chip?.classList.toggle("drnb-off", this.hidden.has(t));
          chip?.setAttribute("aria-pressed", String(!this.hidden.has(t)));
          this.refilter();
        });
        chip.setAttribute("aria-pressed", "true");
        this.chipEls.set(type, chip);
        this.chips.append(chip);
      }
      const text = `${type} ${count}`;
      if (chip.textContent !== text) chip.textContent = text;
    }
  }

  drawRows() {
    const n = this.filtered.length;
    const top = this.viewport.scrollTop;
    const height = this.viewport.clientHeight || 240;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(n, Math.ceil((top + height) / ROW_H) + OVERSCAN);
    const s = this.store;
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) {
      const r = s.records[this.filtered[i]];
      if (!r) continue;
      const row = h("div", "drnb-row");
      row.dataset.index = String(i);
      row.dataset.type = r.type;
      row.style.top = `${i * ROW_H}px`;
      if (r === this.selected) row.classList.add("drnb-selected");
      row.append(
        h("span", "drnb-seq", r.seq ? String(r.seq) : "–"),
        h("span", "drnb-time", fmtRel(r.ts - s.firstTs)),
        h("span", "drnb-type", r.type),
        h("span", "drnb-summary", summaryOf(r)),
      );
      frag.append(row);
    }
    this.rowsEl.replaceChildren(frag);
  }

  onScroll() {
    if (this.programmaticScroll) {
      this.programmaticScroll = false;
    } else {
      const atBottom = this.viewport.scrollTop + this.viewport.clientHeight >= this.viewport.scrollHeight - ROW_H;
      if (!atBottom && this.follow) this.setFollow(false);
    }
    this.drawRows();
  }

  /** @param {boolean} on */
  setFollow(on) {
    this.follow = on;
    this.followBtn.textContent = on ? "pause" : "resume";
    this.followBtn.classList.toggle("drnb-on", !on);
    this.root.dataset.follow = on ? "1" : "0";
    if (on) this.drawLog();
  }

  /** @param {Rec | null} rec */
  select(rec) {
    this.selected = rec;
    this.detail.classList.toggle("drnb-open", !!rec);
    if (rec) {
      this.detailTitle.textContent = `#${rec.seq || "–"} ${rec.type}`;
      this.detailBody.textContent = pretty(fullEvent(rec));
    } else {
      this.detailTitle.textContent = "";
      this.detailBody.textContent = "";
    }
    this.drawRows();
  }
}

// ---------------------------------------------------------------------------------------------
// anywidget entry points
// ---------------------------------------------------------------------------------------------

/** @param {{model: Model}} ctx */
function initialize({ model }) {
  const store = storeFor(model);
  /** @param {any} msg */
  const onMsg = (msg) => store.handle(msg);
  model.on("msg:custom", onMsg);
  const onSent = () => {
    // a view that started after events were sent (page reload) asks for them again
    if (store.requested === null) store.checkChain();
  };
  model.on("change:sent_upto", onSent);
  store.checkChain();
  return () => {
    model.off("msg:custom", onMsg);
    model.off("change:sent_upto", onSent);
    dropStore(model); // the model is gone (or its code reloads: the new store asks again)
  };
}

/** @param {{model: Model, el: HTMLElement}} ctx */
function render({ model, el }) {
  const view = new RunViewUI(model, el, storeFor(model));
  return () => view.destroy();
}

export default { initialize, render };
export { RunStore, summarize };
