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
 * @typedef {{hidden: string[], query: string, follow: boolean, logTop: number,
 *            selected: number | null, attempt: number | "all" | null, cut: number | null,
 *            byTime: boolean, playing: number, tokFollow: boolean, tokTop: number, mono: boolean,
 *            open: number[]}} UiState
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
 * Stores by the widget's `_store_key` (a random id the kernel gives each widget). anywidget
 * hands `initialize` and each `render` a different proxy of the same model, and some hosts
 * (marimo) a different `widget_manager` proxy too, so neither can be the key.
 * @type {Map<string, RunStore>}
 */
const STORES = new Map();
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
    case "custom:step_start":
      s = `${str(d.node_name)} started${d.kind ? ` (${str(d.kind)})` : ""}`;
      break;
    case "custom:llm_usage":
      s = `${d.model ? str(d.model) : "LLM"}: ${
        d.input_tokens == null && d.output_tokens == null
          ? "usage not reported"
          : `${str(d.input_tokens)} in, ${str(d.output_tokens)} out`
      }`;
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
// The per-model store: every event received, deduplicated, in sequence order
// ---------------------------------------------------------------------------------------------

class RunStore {
  /** @param {Model} model anything with get(name) and send(content) */
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
    /** @type {number | null} */
    this.lastRequestChain = null;
    this.version = 0; // bumps on every change
    this.resetVersion = 0; // bumps when views must rebuild (insert before the tail, trim)
    /** @type {number[]} indices of the `started` records: each begins an attempt */
    this.starts = [];
    /** @type {Set<() => void>} */
    this.listeners = new Set();
    this.stats = { msgs: 0, events: 0, applyMs: 0, firstMsgAt: 0, lastMsgAt: 0, requests: 0 };
    /** @type {UiState | null} what the user last set in a view of this widget (see RunViewUI.remember) */
    this.ui = null;
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
        if (r.type === "started") this.starts.push(this.records.length);
        this.records.push(r);
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
      this.reindex();
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
    this.reindex();
  }

  /** The records moved (sorted in, trimmed): find the attempts again and let views rebuild. */
  reindex() {
    this.starts = [];
    this.records.forEach((r, i) => r.type === "started" && this.starts.push(i));
    this.resetVersion++;
  }

  /**
   * Where each attempt begins (indices into records): a run re-run under the same id (a cell
   * run again) holds one `started` per attempt. Events before the first `started` (a gap, a
   * replay that began later) belong to the first attempt.
   * @returns {number[]}
   */
  attemptBounds() {
    return [0, ...this.starts.slice(1)];
  }

  /** The attempt (1-based) that record index `i` belongs to. @param {number} i */
  attemptOf(i) {
    const b = this.attemptBounds();
    let k = 0;
    while (k + 1 < b.length && b[k + 1] <= i) k++;
    return k + 1;
  }
}

// ---------------------------------------------------------------------------------------------
// What the panels show: the events of one range of the store (an attempt, up to a moment),
// folded in sequence order. A view keeps one and folds new events into it as they arrive.
// ---------------------------------------------------------------------------------------------

const STEP_START = "custom:step_start";
const LLM_USAGE = "custom:llm_usage";
const TERMINAL = ["complete", "error", "cancelled"];

/**
 * @typedef {{id: string, name: string, kind: string, parent: string, ts: number, rec: Rec}} OpenStep
 * @typedef {{rec: Rec, firstTs: number, stepEnded: boolean}} ProgressEntry
 */

class RunState {
  /**
   * @param {number} from index in the store where this range begins
   * @param {boolean} latest whether it is the run's latest attempt (an older one has ended)
   * @param {boolean} cut whether it stops before the store's end (time travel)
   */
  constructor(from, latest, cut) {
    this.from = from;
    this.to = from; // records [from, to) of the store are folded in
    this.latest = latest;
    this.cut = cut;
    /** @type {Rec[]} */
    this.records = [];
    /** @type {Map<string, number>} */
    this.typeCounts = new Map();
    this.tokenText = "";
    this.tokenCount = 0;
    this.firstTokenTs = NaN;
    this.lastTokenTs = NaN;
    /** @type {string | null} */
    this.finishReason = null;
    /** @type {Map<string, ProgressEntry>} latest progress event per step */
    this.progress = new Map();
    this.progressVersion = 0;
    /** @type {Rec[]} */
    this.steps = [];
    /** @type {Map<string, OpenStep>} steps that began (custom:step_start) and have not ended */
    this.running = new Map();
    this.runningVersion = 0;
    /** @type {Map<string, number>} nesting depth per step id */
    this.depth = new Map();
    /** @type {Rec[]} checkpoints, custom events, complete output */
    this.objects = [];
    /** @type {Rec[]} errors, cancellations, gaps */
    this.boxes = [];
    /** @type {Rec | null} */
    this.started = null;
    /** @type {Rec | null} */
    this.terminal = null;
    this.usage = { calls: 0, input: 0, output: 0, total: 0, ttftMs: NaN };
    this.heartbeats = 0;
    this.lastHeartbeat = NaN;
    this.firstTs = NaN;
    this.lastTs = NaN;
  }

  /** Fold one record, in sequence order. @param {Rec} r */
  add(r) {
    this.records.push(r);
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
        if (Number.isFinite(r.ts)) {
          if (Number.isNaN(this.firstTokenTs)) this.firstTokenTs = r.ts;
          this.lastTokenTs = r.ts;
        }
        if (d.finish_reason != null) this.finishReason = str(d.finish_reason);
        break;
      case "progress": {
        const step = str(d.step);
        const entry = this.progress.get(step);
        if (entry) {
          entry.rec = r;
          entry.stepEnded = false;
        } else {
          this.progress.set(step, { rec: r, firstTs: r.ts, stepEnded: false });
        }
        this.progressVersion++;
        break;
      }
      case STEP_START:
        this.stepStarted(r);
        break;
      case "step":
        this.steps.push(r);
        this.stepEnded(r);
        break;
      case LLM_USAGE:
        this.addUsage(d);
        break;
      case "checkpoint":
        this.objects.push(r);
        break;
      case "started":
        if (this.records.length > 1 && this.started) {
          // "all attempts": a new attempt begins, the last one's open steps are abandoned
          this.terminal = null;
          this.running.clear();
          this.runningVersion++;
        }
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

  /** @param {Rec} r */
  stepStarted(r) {
    const d = r.data;
    const name = str(d.node_name);
    const id = d.step_id != null ? str(d.step_id) : `name:${name}#${r.seq}`;
    const parent = d.parent_id != null ? str(d.parent_id) : "";
    this.running.set(id, { id, name, kind: str(d.kind), parent, ts: r.ts, rec: r });
    this.depth.set(id, parent && this.depth.has(parent) ? Math.min(6, (this.depth.get(parent) || 0) + 1) : 0);
    this.runningVersion++;
  }

  /** A `step` event ends the running step with its id (or, without one, its name). @param {Rec} r */
  stepEnded(r) {
    const d = r.data;
    const name = str(d.node_name);
    let id = d.step_id != null ? str(d.step_id) : null;
    if (id === null || !this.running.has(id)) {
      id = null;
      for (const open of this.running.values()) {
        if (open.name === name) {
          id = open.id;
          break;
        }
      }
    }
    if (id !== null) {
      this.running.delete(id);
      this.runningVersion++;
    }
    const entry = this.progress.get(name);
    if (entry && !entry.stepEnded) {
      entry.stepEnded = true;
      this.progressVersion++;
    }
  }

  /** @param {Wire} d */
  addUsage(d) {
    const u = this.usage;
    u.calls++;
    const i = num(d.input_tokens);
    const o = num(d.output_tokens);
    const t = num(d.total_tokens);
    if (!Number.isNaN(i)) u.input += i;
    if (!Number.isNaN(o)) u.output += o;
    u.total += !Number.isNaN(t) ? t : (Number.isNaN(i) ? 0 : i) + (Number.isNaN(o) ? 0 : o);
    const ttft = num(d.time_to_first_token_ms);
    if (Number.isNaN(u.ttftMs) && !Number.isNaN(ttft)) u.ttftMs = ttft;
  }

  /**
   * How the range ended, when it has: the terminal event's type, "interrupted" for an older
   * attempt that never sent one (its cell was run again), else null (still going).
   * @returns {string | null}
   */
  ending() {
    if (this.terminal) return this.terminal.type;
    if (!this.latest && !this.cut) return "interrupted";
    return null;
  }

  /** Status from the events; the kernel's trait when there are none yet. @param {Model} model */
  status(model) {
    const end = this.ending();
    if (end) return end;
    if (this.cut) return "running";
    const s = str(model.get("status"));
    if (TERMINAL.includes(s)) return s;
    return this.records.length ? "running" : s || "waiting";
  }

  /** Milliseconds from the range's start (its `started`, else its first event) to the first token. */
  timeToFirstToken() {
    const start = this.started ? this.started.ts : this.firstTs;
    const fromEvents = this.firstTokenTs - start;
    if (Number.isFinite(fromEvents) && fromEvents >= 0) return fromEvents;
    return this.usage.ttftMs;
  }

  /** Tokens per second between the first and the last token (NaN with fewer than two). */
  tokensPerSecond() {
    const span = this.lastTokenTs - this.firstTokenTs;
    if (!(this.tokenCount >= 2) || !(span > 0)) return NaN;
    return ((this.tokenCount - 1) * 1000) / span;
  }

  /** The run's final output as text: the streamed tokens, else complete.output as JSON. */
  outputText() {
    if (this.tokenText) return this.tokenText;
    if (this.terminal && this.terminal.type === "complete") {
      const out = this.terminal.data.output;
      if (out == null) return "";
      return typeof out === "string" ? out : pretty(out);
    }
    return "";
  }
}

/**
 * Fold the records of `store` in [from, end) into `state`, or into a new RunState when the
 * range no longer extends the one folded (another attempt, a step back in time, a rebuilt store).
 * @param {RunStore} store @param {RunState | null} state @param {number} from @param {number} end
 * @param {boolean} latest @param {boolean} cut @param {number} resetVersion
 * @returns {RunState}
 */
function foldRange(store, state, from, end, latest, cut, resetVersion) {
  let st = state;
  if (!st || /** @type {any} */ (st).resetVersion !== resetVersion || st.from !== from || end < st.to ||
      st.latest !== latest || st.cut !== cut) {
    st = new RunState(from, latest, cut);
    /** @type {any} */ (st).resetVersion = resetVersion;
  }
  const recs = store.records;
  for (let i = st.to; i < end; i++) st.add(recs[i]);
  st.to = Math.max(st.to, end);
  return st;
}

/** The latest attempt of a store, folded (for views that show no attempt picker). @param {RunStore} store @param {RunState | null} state */
function latestState(store, state) {
  const b = store.attemptBounds();
  return foldRange(store, state, b[b.length - 1], store.records.length, true, false, store.resetVersion);
}

/** @param {Model} model */
function storeFor(model) {
  const key = str(model.get("_store_key"));
  if (!key) {
    let store = BY_MODEL.get(model);
    if (!store) BY_MODEL.set(model, (store = new RunStore(model)));
    return store;
  }
  let store = STORES.get(key);
  if (!store) STORES.set(key, (store = new RunStore(model)));
  return store;
}

/** @param {Model} model */
function dropStore(model) {
  const key = str(model.get("_store_key"));
  if (key) STORES.delete(key);
  BY_MODEL.delete(model);
}

// ---------------------------------------------------------------------------------------------
// A view
// ---------------------------------------------------------------------------------------------

const TICK_MS = 250; // running steps' timers; the header's elapsed time every 4th tick
const SPEEDS = [1, 2, 10];

class RunViewUI {
  /** @param {Model} model @param {HTMLElement} el @param {RunStore} store */
  constructor(model, el, store) {
    this.model = model;
    this.store = store;
    this.el = el;
    this.frame = 0;
    /** @type {Set<string>} */
    this.hidden = new Set();
    this.query = "";
    this.follow = true;
    /** @type {number[]} indices into state.records that pass the filter */
    this.filtered = [];
    this.scanned = 0;
    /** @type {Rec | null} */
    this.selected = null;
    /** @type {number | null} where the view last scrolled the log itself (following) */
    this.programmaticTop = null;
    /** @type {number | "all" | null} the attempt shown (1-based); null: the latest */
    this.attempt = null;
    /** @type {number | null} time travel: how many events of the range are shown; null: all */
    this.cut = null;
    this.travelByTime = false;
    /** @type {{speed: number, realStart: number, runStart: number, raf: number} | null} */
    this.playing = null;
    /** @type {RunState | null} */
    this.state = null;
    this.stats = { draws: 0, drawMs: 0, lastDrawAt: 0, renderedEvents: 0 };
    /** @type {Set<number>} keys of the checkpoint/custom entries the user opened */
    this.openObjects = new Set();
    /** @type {number | null} scroll positions to put back once the view is laid out */
    this.pendingLogTop = null;
    /** @type {number | null} */
    this.pendingTokTop = null;
    this.restoring = false;
    this.build();
    const saved = store.ui;
    if (saved) this.restoreUi(saved);
    this.unsubscribe = store.subscribe(() => this.schedule());
    /** @type {[string, Function][]} */
    this.modelHandlers = [];
    for (const name of ["status", "run_status", "connection", "note", "backend", "event_count", "latency_seconds",
      "can_cancel", "snapshot"]) {
      const fn = () => this.schedule();
      model.on(`change:${name}`, fn);
      this.modelHandlers.push([`change:${name}`, fn]);
    }
    this.ticks = 0;
    this.ticker = setInterval(() => this.tick(), TICK_MS);
    this.draw();
    if (saved) this.restoreAfterDraw(saved);
    // a host may attach the view after render() (JupyterLab does): scroll positions wait for it
    this.resizer = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => this.onResize());
    this.resizer?.observe(this.viewport);
    this.resizer?.observe(this.tokText);
  }

  destroy() {
    this.unsubscribe();
    this.resizer?.disconnect();
    for (const [ev, fn] of this.modelHandlers) this.model.off(ev, fn);
    clearInterval(this.ticker);
    cancelAnimationFrame(this.tokScrollFrame);
    this.stopPlay();
    if (this.frame) cancelAnimationFrame(this.frame);
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  // -- UI state kept in the store ---------------------------------------------------------------
  // A host may draw the widget again: JupyterLab makes a new view when the output's static HTML
  // is refreshed at the run's end (what a saved notebook shows), and a notebook can show a
  // widget twice. What the user set (filters, search, pause, scroll positions, the opened
  // event, attempt, time travel, replay, token follow, monospace, opened entries) lives in the
  // widget's store, so a new view comes back as the user left the last one.

  /**
   * Keep part of the UI state in the store. A view its host has taken off the page (the old
   * one after a re-render) keeps running but must not overwrite what the new one restored.
   * @param {Partial<UiState>} patch
   */
  remember(patch) {
    if (this.restoring || !this.root.isConnected) return;
    const base = this.store.ui ?? this.uiState();
    this.store.ui = { ...base, ...patch };
  }

  /** @returns {UiState} */
  uiState() {
    return {
      hidden: [...this.hidden], query: this.query, follow: this.follow, logTop: 0,
      selected: this.selected ? this.selected.key : null, attempt: this.attempt, cut: this.cut,
      byTime: this.travelByTime, playing: this.playing ? this.playing.speed : 0,
      tokFollow: this.tokFollow, tokTop: 0, mono: this.tokText.classList.contains("drnb-mono"),
      open: [...this.openObjects],
    };
  }

  /** Before the first draw: the settings that decide what is drawn. @param {UiState} ui */
  restoreUi(ui) {
    this.restoring = true;
    try {
      this.hidden = new Set(ui.hidden);
      this.query = ui.query;
      this.search.value = ui.query;
      this.setFollow(ui.follow);
      this.attempt = ui.attempt;
      this.cut = ui.cut;
      this.travelByTime = ui.byTime;
      this.setTokenFollow(ui.tokFollow);
      this.tokText.classList.toggle("drnb-mono", ui.mono);
      this.monoBtn.classList.toggle("drnb-on", ui.mono);
      this.openObjects = new Set(ui.open);
      this.pendingLogTop = ui.follow ? null : ui.logTop;
      this.pendingTokTop = ui.tokFollow ? null : ui.tokTop;
    } finally {
      this.restoring = false;
    }
  }

  /** After the first draw: what needs the records (the opened event, a running replay). @param {UiState} ui */
  restoreAfterDraw(ui) {
    this.restoring = true;
    try {
      if (ui.selected !== null) this.select(this.recordByKey(ui.selected));
      if (ui.playing) this.play(ui.playing);
      this.applyPendingScroll();
    } finally {
      this.restoring = false;
    }
  }

  /** @param {number} key @returns {Rec | null} */
  recordByKey(key) {
    const recs = this.store.records;
    let lo = 0;
    let hi = recs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (recs[mid].key < key) lo = mid + 1;
      else hi = mid;
    }
    return recs[lo] && recs[lo].key === key ? recs[lo] : null;
  }

  onResize() {
    this.applyPendingScroll();
    if (this.follow && this.state) this.drawLog(this.state);
    if (this.tokFollow) this.scrollTokensToEnd();
  }

  /** Put back the scroll positions restored from the store, once the boxes have a size. */
  applyPendingScroll() {
    if (this.pendingLogTop !== null && this.viewport.clientHeight > 0) {
      this.viewport.scrollTop = this.pendingLogTop;
      this.pendingLogTop = null;
      this.drawRows();
    }
    if (this.pendingTokTop !== null && this.tokText.clientHeight > 0) {
      this.tokText.scrollTop = this.pendingTokTop;
      this.pendingTokTop = null;
    }
  }

  tick() {
    if (!this.root.isConnected) return; // off the page (or replaced by a redraw): no timers to show
    this.ticks++;
    if (this.state) this.tickRunning(this.state);
    if (this.ticks % 4 === 0) this.drawHeader();
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

    root.append(head, this.hNote, this.buildAttempts(), this.buildTravel(), this.boxes,
      this.boxesNote, this.buildTokens(), this.buildRunning(), this.buildProgress(),
      this.buildSteps(), this.buildObjects(), this.buildLog());
    this.el.replaceChildren(root);
  }

  buildTokens() {
    this.tokSec = h("section", "drnb-section drnb-tokens");
    const tokBar = h("div", "drnb-bar-title");
    tokBar.append(h("span", "drnb-title", "Output"));
    this.tokInfo = h("span", "drnb-muted drnb-token-info");
    this.tokRate = h("span", "drnb-muted drnb-token-rate");
    this.monoBtn = /** @type {HTMLButtonElement} */ (h("button", "drnb-btn drnb-mono-toggle", "monospace"));
    this.monoBtn.type = "button";
    this.monoBtn.addEventListener("click", () => {
      const mono = this.tokText.classList.toggle("drnb-mono");
      this.monoBtn.classList.toggle("drnb-on", mono);
      this.remember({ mono });
    });
    this.tokFinish = h("span", "drnb-finish");
    this.tokFollowBtn = /** @type {HTMLButtonElement} */ (h("button", "drnb-btn drnb-token-follow", "follow newest"));
    this.tokFollowBtn.type = "button";
    this.tokFollowBtn.hidden = true;
    this.tokFollowBtn.addEventListener("click", () => this.setTokenFollow(true));
    tokBar.append(this.tokInfo, this.tokRate, this.tokFinish, this.tokFollowBtn, this.monoBtn);
    this.tokText = h("div", "drnb-token-text");
    this.tokLen = 0;
    this.tokFollow = true;
    this.tokProgrammatic = false;
    this.tokScrollPending = false;
    this.tokScrollFrame = 0;
    this.tokText.addEventListener("scroll", () => this.onTokenScroll());
    this.tokSec.append(tokBar, this.tokText);
    return this.tokSec;
  }

  buildRunning() {
    this.runSec = h("section", "drnb-section drnb-running");
    this.runTitle = h("div", "drnb-title", "Running now");
    this.runSec.append(this.runTitle);
    this.runList = h("div", "drnb-running-list");
    this.runSec.append(this.runList);
    /** @type {{row: HTMLElement, time: HTMLElement, since: number}[]} */
    this.runRows = [];
    this.runKey = "";
    return this.runSec;
  }

  buildProgress() {
    this.progSec = h("section", "drnb-section drnb-progress");
    this.progSec.append(h("div", "drnb-title", "Progress"));
    this.progList = h("div", "drnb-progress-list");
    this.progSec.append(this.progList);
    /** @type {Map<string, {row: HTMLElement, fill: HTMLElement, pct: HTMLElement, msg: HTMLElement}>} */
    this.progRows = new Map();
    this.progVersion = -1;
    this.progEnding = "";
    return this.progSec;
  }

  buildSteps() {
    this.stepSec = h("section", "drnb-section drnb-steps");
    this.stepSec.append(h("div", "drnb-title", "Steps"));
    this.stepMore = h("div", "drnb-more");
    this.stepList = h("div", "drnb-step-list");
    this.stepSec.append(this.stepMore, this.stepList);
    /** @type {{rec: Rec, bar: HTMLElement}[]} */
    this.stepRows = [];
    this.stepsDrawn = 0;
    this.stepSpan = "";
    return this.stepSec;
  }

  buildObjects() {
    this.objSec = h("section", "drnb-section drnb-objects");
    this.objSec.append(h("div", "drnb-title", "Checkpoints and custom events"));
    this.objMore = h("div", "drnb-more");
    this.objList = h("div", "drnb-object-list");
    this.objSec.append(this.objMore, this.objList);
    this.objsDrawn = 0;
    this.boxesDrawn = 0;
    return this.objSec;
  }

  buildLog() {
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
      this.remember({ query: this.query });
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
      if (!row || !this.state) return;
      const i = Number(row.dataset.index);
      const rec = this.state.records[this.filtered[i]];
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
    return this.logSec;
  }

  // -- which events are shown: an attempt, up to a moment ---------------------------------------

  /** The selected attempt's records in the store: [from, to), and whether it is the latest. */
  range() {
    const s = this.store;
    const n = s.records.length;
    if (this.attempt === "all") return { from: 0, to: n, latest: true, k: 0, attempts: s.attemptBounds().length };
    const b = s.attemptBounds();
    const k = this.attempt === null ? b.length : Math.min(Math.max(1, this.attempt), b.length);
    return { from: b[k - 1], to: k < b.length ? b[k] : n, latest: k === b.length, k, attempts: b.length };
  }

  /** Bring `this.state` up to date; returns true when it was rebuilt (panels must redraw). */
  refreshState() {
    const r = this.range();
    const total = r.to - r.from;
    const cutting = this.cut !== null && this.cut < total;
    const end = cutting ? r.from + /** @type {number} */ (this.cut) : r.to;
    const before = this.state;
    this.state = foldRange(this.store, this.state, r.from, end, r.latest, cutting, this.store.resetVersion);
    return this.state !== before;
  }

  draw() {
    const t0 = performance.now();
    const s = this.store;
    this.loadSnapshot();
    if (this.refreshState()) this.resetPanels();
    const st = /** @type {RunState} */ (this.state);
    // The log reads layout (scroll position, viewport height), so it goes first, while the
    // layout is still clean; the other panels only write (the token box's follow excepted).
    this.drawLog(st);
    this.drawHeader();
    this.drawAttempts();
    this.drawTravel();
    this.drawBoxes(st);
    this.drawTokens(st);
    this.drawRunning(st);
    this.drawProgress(st);
    this.drawSteps(st);
    this.drawObjects(st);
    if (this.tokScrollPending) this.followTokens();
    this.stats.draws++;
    this.stats.drawMs += performance.now() - t0;
    this.stats.lastDrawAt = Date.now();
    this.stats.renderedEvents = s.records.length;
    this.root.dataset.events = String(s.records.length);
    this.root.dataset.shown = String(st.records.length);
    this.root.dataset.version = String(s.version);
  }

  resetPanels() {
    this.tokText.replaceChildren();
    this.tokLen = 0;
    this.progList.replaceChildren();
    this.progRows.clear();
    this.progVersion = -1;
    this.runList.replaceChildren();
    this.runRows = [];
    this.runKey = "";
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
    for (const chip of this.chipEls.values()) chip.remove();
    this.chipEls.clear();
  }

  /**
   * A saved notebook opened without a kernel: no event ever arrives, but the widget's saved
   * state holds `snapshot`, the final events (bounded) the kernel left there when the run ended.
   */
  loadSnapshot() {
    const s = this.store;
    if (s.records.length || s.snapshotLoaded) return;
    const snap = this.model.get("snapshot");
    if (!snap || typeof snap !== "object" || !Array.isArray(snap.events) || !snap.events.length) return;
    s.snapshotLoaded = true;
    s.apply(snap.events);
  }

  // -- header -----------------------------------------------------------------------------------

  drawHeader() {
    const s = this.store;
    const st = this.state;
    if (!st) return;
    const m = this.model;
    const status = st.status(m);
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
    const shown = st.records.length;
    this.hCount.textContent = shown < s.records.length
      ? `${shown} of ${n} events`
      : `${n} event${n === 1 ? "" : "s"}`;
    let elapsed = st.lastTs - st.firstTs;
    if (status === "running" && conn === "live" && !st.cut && Number.isFinite(st.firstTs)) {
      elapsed = Math.max(elapsed, Date.now() - st.firstTs);
    }
    this.hElapsed.textContent = Number.isFinite(elapsed) ? `elapsed ${fmtDuration(elapsed)}` : "";
    let latency = "";
    if (status === "complete") {
      const fromEvent = st.terminal ? num(st.terminal.data.latency_seconds) : NaN;
      const fromTrait = st.latest ? num(m.get("latency_seconds")) : NaN;
      const sec = !Number.isNaN(fromEvent) ? fromEvent : !Number.isNaN(fromTrait) ? fromTrait
        : (st.lastTs - st.firstTs) / 1000;
      latency = Number.isFinite(sec) ? `latency ${fmtDuration(sec * 1000)}` : "";
    }
    this.hLatency.textContent = latency;
    this.hLatency.hidden = !latency;
    if (st.heartbeats) {
      const age = Date.now() - st.lastHeartbeat;
      this.hPulseText.textContent = `${st.heartbeats} heartbeat${st.heartbeats === 1 ? "" : "s"}` +
        (Number.isFinite(age) && age >= 0 && status === "running" && !st.cut ? `, last ${fmtDuration(age)} ago` : "");
      if (this.pulsedAt !== st.heartbeats) {
        this.pulsedAt = st.heartbeats;
        this.hPulse.classList.add("drnb-beat");
        // Web Animations restart without forcing a layout (a CSS class toggle would need one)
        this.hPulse.getAnimations?.().forEach((a) => a.cancel());
        this.hPulse.animate?.(
          [{ transform: "scale(1.8)", opacity: 1 }, { transform: "scale(1)", opacity: 0.5 }],
          { duration: 900, easing: "ease-out" },
        );
      }
    }
    this.hPulse.parentElement && (this.hPulse.parentElement.hidden = !st.heartbeats);
    const sd = st.started ? st.started.data : null;
    this.hAgent.textContent = sd ? [sd.agent_name, sd.framework].filter((x) => x).map(str).join(" · ") : "";
    const note = str(m.get("note"));
    this.cancelBtn.hidden = !m.get("can_cancel") || ["complete", "error", "cancelled"].includes(status);
    if (this.cancelBtn.disabled && note.startsWith("cancel failed")) {
      this.cancelBtn.disabled = false; // the kernel said why; the user may try again
      this.cancelBtn.textContent = "cancel run";
    }
    const missing = s.ranges.length ? "some earlier events are missing; asked the kernel to send them again" : "";
    const saved = s.snapshotLoaded && !s.stats.msgs ? str(m.get("snapshot")?.note) : "";
    this.hNote.textContent = [note, missing, saved].filter((x) => x).join(" — ");
    this.hNote.hidden = !this.hNote.textContent;
  }

  // -- attempts ---------------------------------------------------------------------------------

  buildAttempts() {
    this.attSec = h("div", "drnb-attempts");
    this.attSec.append(h("span", "drnb-title", "Attempts"));
    this.attButtons = h("span", "drnb-attempt-buttons");
    this.attInfo = h("span", "drnb-muted drnb-attempt-info");
    this.attSec.append(this.attButtons, this.attInfo);
    this.attSec.hidden = true;
    this.attKey = "";
    return this.attSec;
  }

  drawAttempts() {
    const r = this.range();
    this.attSec.hidden = r.attempts < 2;
    if (r.attempts < 2) return;
    const key = `${r.attempts}|${this.attempt}`;
    if (key !== this.attKey) {
      this.attKey = key;
      const buttons = [];
      for (let k = 1; k <= r.attempts; k++) {
        const b = /** @type {HTMLButtonElement} */ (h("button", "drnb-btn drnb-attempt", k === r.attempts ? `${k} (latest)` : String(k)));
        b.type = "button";
        b.dataset.attempt = String(k);
        const on = this.attempt === "all" ? false : (this.attempt ?? r.attempts) === k;
        b.classList.toggle("drnb-on", on);
        b.setAttribute("aria-pressed", String(on));
        b.addEventListener("click", () => this.showAttempt(k === r.attempts ? null : k));
        buttons.push(b);
      }
      const all = /** @type {HTMLButtonElement} */ (h("button", "drnb-btn drnb-attempt", "all"));
      all.type = "button";
      all.dataset.attempt = "all";
      all.classList.toggle("drnb-on", this.attempt === "all");
      all.addEventListener("click", () => this.showAttempt("all"));
      buttons.push(all);
      this.attButtons.replaceChildren(...buttons);
    }
    this.attInfo.textContent = this.attempt === "all"
      ? `all ${r.attempts} attempts (${this.store.records.length} events)`
      : `attempt ${r.k} of ${r.attempts}: ${r.to - r.from} events`;
  }

  /** @param {number | "all" | null} k */
  showAttempt(k) {
    this.stopPlay();
    this.attempt = k;
    this.cut = null;
    this.attKey = "";
    this.remember({ attempt: k, cut: null, playing: 0 });
    this.schedule();
  }

  // -- time travel ------------------------------------------------------------------------------

  buildTravel() {
    this.travelSec = h("div", "drnb-travel");
    this.travelSec.append(h("span", "drnb-title", "Time travel"));
    this.travelRange = /** @type {HTMLInputElement} */ (h("input", "drnb-travel-range"));
    this.travelRange.type = "range";
    this.travelRange.min = "0";
    this.travelRange.setAttribute("aria-label", "show the run as it stood at this point");
    this.travelRange.addEventListener("input", () => {
      const v = Number(this.travelRange.value);
      this.stopPlay();
      if (this.travelByTime) this.travelTo({ time: v });
      else this.travelTo({ event: v });
    });
    this.travelMode = /** @type {HTMLButtonElement} */ (h("button", "drnb-btn drnb-travel-mode", "by event"));
    this.travelMode.type = "button";
    this.travelMode.addEventListener("click", () => {
      this.travelByTime = !this.travelByTime;
      this.remember({ byTime: this.travelByTime });
      this.travelKey = "";
      this.drawTravel();
    });
    this.travelLabel = h("span", "drnb-muted drnb-travel-label");
    const speeds = h("span", "drnb-travel-speeds");
    speeds.append(h("span", "drnb-muted", "replay"));
    /** @type {HTMLButtonElement[]} */
    this.playBtns = [];
    for (const speed of SPEEDS) {
      const b = /** @type {HTMLButtonElement} */ (h("button", "drnb-btn drnb-play", `${speed}x`));
      b.type = "button";
      b.dataset.speed = String(speed);
      b.addEventListener("click", () => (this.playing && this.playing.speed === speed ? this.stopPlay() : this.play(speed)));
      this.playBtns.push(b);
      speeds.append(b);
    }
    this.travelEnd = /** @type {HTMLButtonElement} */ (h("button", "drnb-btn drnb-travel-end", "end"));
    this.travelEnd.type = "button";
    this.travelEnd.addEventListener("click", () => {
      this.stopPlay();
      this.cut = null;
      this.remember({ cut: null });
      this.schedule();
    });
    this.travelSec.append(this.travelRange, this.travelMode, this.travelLabel, speeds, this.travelEnd);
    this.travelSec.hidden = true;
    this.travelKey = "";
    return this.travelSec;
  }

  /** The selected attempt's records, in the store (time travel moves within them). */
  rangeRecords() {
    const r = this.range();
    return this.store.records.slice(r.from, r.to);
  }

  /** Whether the run (the shown attempt) has ended, so there is a whole history to travel. */
  finished() {
    const r = this.range();
    if (!r.latest) return true;
    const last = this.store.records[r.to - 1];
    const conn = str(this.model.get("connection"));
    return (last && TERMINAL.includes(last.type)) || (conn === "closed" && r.to > r.from) ||
      (this.attempt === "all" && TERMINAL.includes(str(this.model.get("status"))));
  }

  drawTravel() {
    const done = this.finished();
    this.travelSec.hidden = !done;
    this.root.dataset.travel = this.cut === null ? "" : String(this.cut);
    if (!done || !this.state) return;
    const r = this.range();
    const total = r.to - r.from;
    const recs = this.store.records;
    const first = recs[r.from] ? recs[r.from].ts : NaN;
    const lastTs = recs[r.to - 1] ? recs[r.to - 1].ts : NaN;
    const span = Math.max(0, lastTs - first) || 0;
    const shown = this.cut === null ? total : Math.min(total, this.cut);
    const at = shown > 0 ? recs[r.from + shown - 1].ts - first : 0;
    if (this.travelByTime) {
      this.travelRange.max = String(Math.ceil(span));
      this.travelRange.step = "1";
      this.travelRange.value = String(Math.round(this.cut === null ? span : Math.max(0, at)));
    } else {
      this.travelRange.max = String(total);
      this.travelRange.step = "1";
      this.travelRange.value = String(shown);
    }
    this.travelMode.textContent = this.travelByTime ? "by time" : "by event";
    this.travelLabel.textContent = `event ${shown} of ${total} · ${fmtRel(Number.isFinite(at) ? at : 0)}` +
      ` of ${fmtDuration(span)}`;
    for (const b of this.playBtns) b.classList.toggle("drnb-on", !!this.playing && this.playing.speed === Number(b.dataset.speed));
    this.travelEnd.disabled = this.cut === null;
  }

  /**
   * Show the shown attempt as it stood at event N (1-based count) or at T milliseconds after
   * its first event.
   * @param {{event?: number, time?: number}} where
   */
  travelTo(where) {
    const recs = this.rangeRecords();
    let count = recs.length;
    if (where.event !== undefined) {
      count = Math.max(0, Math.min(recs.length, Math.round(where.event)));
    } else if (where.time !== undefined && recs.length) {
      const limit = recs[0].ts + where.time;
      count = 0;
      while (count < recs.length && !(recs[count].ts > limit)) count++;
    }
    this.cut = count >= recs.length ? null : count;
    this.remember({ cut: this.cut });
    this.schedule();
  }

  /** Replay the shown attempt at its original pace times `speed`, from where the scrubber is. @param {number} speed */
  play(speed) {
    this.stopPlay();
    const recs = this.rangeRecords();
    if (!recs.length) return;
    let count = this.cut === null || this.cut >= recs.length ? 0 : this.cut;
    const first = recs[0].ts;
    const runStart = count > 0 ? recs[count - 1].ts - first : 0;
    this.cut = count;
    const playing = { speed, realStart: performance.now(), runStart, raf: 0 };
    this.playing = playing;
    this.remember({ playing: speed, cut: count });
    const step = () => {
      if (this.playing !== playing) return;
      const runT = playing.runStart + (performance.now() - playing.realStart) * speed;
      const before = count;
      while (count < recs.length && !(recs[count].ts - first > runT)) count++;
      if (count >= recs.length) {
        this.playing = null;
        this.cut = null;
        this.remember({ playing: 0, cut: null });
      } else {
        this.cut = count;
        if (count !== before) this.remember({ cut: count });
        playing.raf = requestAnimationFrame(step);
      }
      this.schedule();
    };
    playing.raf = requestAnimationFrame(step);
    this.schedule();
  }

  stopPlay() {
    if (!this.playing) return;
    cancelAnimationFrame(this.playing.raf);
    this.playing = null;
    this.remember({ playing: 0, cut: this.cut });
    this.schedule();
  }

  // -- panels -----------------------------------------------------------------------------------

  /** @param {RunState} st */
  drawBoxes(st) {
    if (this.boxesDrawn === st.boxes.length) return;
    for (let i = this.boxesDrawn; i < st.boxes.length; i++) {
      const r = st.boxes[i];
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
    this.boxesDrawn = st.boxes.length;
    while (this.boxes.childElementCount > BOX_ROWS) this.boxes.firstElementChild?.remove();
    const hiddenBoxes = st.boxes.length - this.boxes.childElementCount;
    this.boxesNote.textContent = hiddenBoxes > 0 ? `${hiddenBoxes} earlier notices not shown (see the event log)` : "";
    this.boxesNote.hidden = hiddenBoxes <= 0;
  }

  /** @param {RunState} st */
  drawTokens(st) {
    this.tokSec.hidden = st.tokenCount === 0;
    if (st.tokenText.length > this.tokLen) {
      this.tokText.append(document.createTextNode(st.tokenText.slice(this.tokLen)));
      this.tokLen = st.tokenText.length;
      if (this.tokText.childNodes.length > 200) this.tokText.normalize();
      if (this.tokFollow) this.tokScrollPending = true; // scrolled in the next frame
    }
    this.tokInfo.textContent = `${st.tokenCount} tokens, ${st.tokenText.length} chars`;
    const ttft = st.timeToFirstToken();
    const rate = st.tokensPerSecond();
    this.tokRate.textContent = [
      Number.isFinite(ttft) ? `first token after ${fmtDuration(ttft)}` : "",
      Number.isFinite(rate) ? `${rate >= 100 ? Math.round(rate) : rate.toFixed(1)} tokens/s` : "",
    ].filter((x) => x).join(" · ");
    this.tokFinish.textContent = st.finishReason ? `finish: ${st.finishReason}` : "";
  }

  /**
   * Keep the token box at its end. Scrolling reads the layout of the whole text, so it waits
   * for the next frame, when the layout the browser made to paint this one is still clean
   * (reading it in draw() would lay a long output out twice per frame).
   */
  followTokens() {
    if (this.tokScrollFrame) return;
    this.tokScrollFrame = requestAnimationFrame(() => {
      this.tokScrollFrame = 0;
      this.tokScrollPending = false;
      if (this.tokFollow) this.scrollTokensToEnd();
    });
  }

  scrollTokensToEnd() {
    const box = this.tokText;
    const top = box.scrollHeight - box.clientHeight;
    if (top > 0 && Math.abs(box.scrollTop - top) > 1) {
      this.tokProgrammatic = true;
      box.scrollTop = top;
    }
  }

  /** Like a terminal: scrolling up stops following the newest text, scrolling to the end resumes. */
  onTokenScroll() {
    if (this.tokProgrammatic) {
      this.tokProgrammatic = false;
      return;
    }
    const box = this.tokText;
    const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    if (atEnd !== this.tokFollow) this.setTokenFollow(atEnd);
    if (!atEnd) this.remember({ tokTop: box.scrollTop });
  }

  /** @param {boolean} on */
  setTokenFollow(on) {
    this.tokFollow = on;
    this.remember({ tokFollow: on });
    this.tokFollowBtn.hidden = on;
    this.tokSec.dataset.follow = on ? "1" : "0";
    if (on) this.scrollTokensToEnd();
  }

  /**
   * Steps that have begun and not ended: from `custom:step_start` (integrations write one when a
   * step begins), else from a step's progress below 100%. Each shows a live elapsed timer; once
   * the run has ended they settle: "ended with the run" or "abandoned".
   * @param {RunState} st
   */
  drawRunning(st) {
    const ending = st.ending();
    /** @type {{name: string, kind: string, since: number, source: string, depth: number}[]} */
    const open = [];
    const names = new Set();
    for (const s of st.running.values()) {
      open.push({ name: s.name, kind: s.kind, since: s.ts, source: "step", depth: st.depth.get(s.id) || 0 });
      names.add(s.name);
    }
    for (const [step, p] of st.progress) {
      const v = num(p.rec.data.progress);
      // once the run has ended, its progress bars settle in the Progress panel instead
      if (ending !== null || names.has(step) || p.stepEnded || !(v < 1)) continue;
      open.push({ name: step, kind: "progress", since: p.firstTs, source: "progress", depth: 0 });
    }
    const state = ending === null ? "running" : ending === "complete" ? "done" : "abandoned";
    this.runSec.hidden = open.length === 0;
    this.runSec.dataset.state = state;
    this.runTitle.textContent = state === "running" ? "Running now" : "Left open when the run ended";
    const key = `${st.runningVersion}|${st.progressVersion}|${state}|${open.length}`;
    if (key !== this.runKey) {
      this.runKey = key;
      this.runRows = [];
      const rows = [];
      for (const o of open.slice(-STEP_ROWS)) {
        const row = h("div", "drnb-running-row");
        row.dataset.state = state;
        row.dataset.source = o.source;
        if (o.depth) row.style.paddingLeft = `${o.depth * 12}px`;
        const time = h("span", "drnb-running-time");
        const label = state === "running" ? "running" : state === "done" ? "ended with the run" : "abandoned";
        row.append(h("span", "drnb-running-dot"), h("span", "drnb-running-name", o.name),
          h("span", "drnb-running-kind", o.kind), h("span", "drnb-running-state", label), time);
        rows.push(row);
        this.runRows.push({ row, time, since: o.since });
      }
      this.runList.replaceChildren(...rows);
    }
    this.tickRunning(st);
  }

  /** The running steps' timers: until now while live, until the run's end once settled. @param {RunState} st */
  tickRunning(st) {
    if (!this.runRows.length) return;
    const live = st.ending() === null && !st.cut && str(this.model.get("connection")) !== "closed";
    const end = live ? Math.max(Date.now(), st.lastTs) : st.lastTs;
    for (const r of this.runRows) {
      const text = fmtDuration(Math.max(0, end - r.since));
      if (r.time.textContent !== text) r.time.textContent = text;
    }
  }

  /** @param {RunState} st */
  drawProgress(st) {
    this.progSec.hidden = st.progress.size === 0;
    const ending = st.ending() || "";
    if (this.progVersion === st.progressVersion && this.progEnding === ending) return;
    this.progVersion = st.progressVersion;
    this.progEnding = ending;
    for (const [step, entry] of st.progress) {
      const r = entry.rec;
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
      const percent = `${Math.round(p * 100)}%`;
      // a bar the run left below 100% settles: done (its step ended, or the run completed) or
      // abandoned (the run failed, was cancelled or was run again)
      const state = p >= 1 || entry.stepEnded ? "done" : !ending ? "active" : ending === "complete" ? "done" : "abandoned";
      row.row.dataset.state = state;
      row.row.dataset.done = state === "done" ? "1" : "0";
      row.fill.style.width = `${(state === "done" ? 100 : p * 100).toFixed(1)}%`;
      row.pct.textContent = state === "done" && p < 1 ? "done" : state === "abandoned" ? `stopped ${percent}` : percent;
      row.row.title = p < 1 && state !== "active" ? `last reported ${percent}` : "";
      row.msg.textContent = str(r.data.message);
    }
  }

  /** @param {RunState} st */
  drawSteps(st) {
    this.stepSec.hidden = st.steps.length === 0;
    if (!st.steps.length) return;
    for (let i = Math.max(this.stepsDrawn, st.steps.length - STEP_ROWS); i < st.steps.length; i++) {
      const r = st.steps[i];
      const d = r.data;
      const row = h("div", "drnb-step-row");
      row.dataset.seq = String(r.seq);
      if (d.status === "error") row.dataset.status = "error";
      const depth = d.step_id != null ? st.depth.get(str(d.step_id)) || 0 : 0;
      const name = h("span", "drnb-step-name", str(d.node_name));
      if (depth) name.style.paddingLeft = `${depth * 12}px`;
      if (d.error != null) name.title = str(d.error);
      const track = h("span", "drnb-step-track");
      const bar = h("span", "drnb-step-bar");
      track.append(bar);
      const ms = num(d.duration_ms);
      const dur = h("span", "drnb-step-dur", Number.isNaN(ms) ? "–" : fmtDuration(ms));
      const ik = Array.isArray(d.input_keys) ? d.input_keys.map(str).join(", ") : "";
      const ok = Array.isArray(d.output_keys) ? d.output_keys.map(str).join(", ") : "";
      const err = d.status === "error" ? `error: ${str(d.error)}` : "";
      const keys = h("span", "drnb-step-keys", err || (ik || ok ? `in: ${ik || "–"}  out: ${ok || "–"}` : ""));
      row.append(name, track, dur, keys);
      this.stepList.append(row);
      this.stepRows.push({ rec: r, bar });
    }
    this.stepsDrawn = st.steps.length;
    while (this.stepRows.length > STEP_ROWS) {
      this.stepRows.shift();
      this.stepList.firstElementChild?.remove();
    }
    const hiddenSteps = st.steps.length - this.stepRows.length;
    this.stepMore.textContent = hiddenSteps > 0 ? `${hiddenSteps} earlier steps not shown` : "";
    this.stepMore.hidden = hiddenSteps <= 0;
    placeBars(this.stepRows, st.firstTs, st.lastTs, this);
  }

  /** @param {RunState} st */
  drawObjects(st) {
    this.objSec.hidden = st.objects.length === 0;
    if (this.objsDrawn === st.objects.length) return;
    for (let i = Math.max(this.objsDrawn, st.objects.length - OBJECT_ROWS); i < st.objects.length; i++) {
      const r = st.objects[i];
      const d = r.data;
      const det = /** @type {HTMLDetailsElement} */ (h("details", "drnb-object"));
      det.dataset.type = r.type;
      det.dataset.seq = String(r.seq);
      const sum = h("summary", "drnb-object-summary");
      const label = r.type === "checkpoint" ? `checkpoint ${str(d.name)}`
        : r.type === "complete" ? "output (complete)" : r.type;
      sum.append(h("span", "drnb-object-label", label), h("span", "drnb-muted", ` #${r.seq} ${fmtRel(r.ts - st.firstTs)}`));
      const pre = h("pre", "drnb-json");
      det.append(sum, pre);
      if (this.openObjects.has(r.key)) det.open = true; // as the user left it (restoreUi)
      det.addEventListener("toggle", () => {
        if (det.open !== this.openObjects.has(r.key)) {
          if (det.open) this.openObjects.add(r.key);
          else this.openObjects.delete(r.key);
          this.remember({ open: [...this.openObjects] });
        }
        if (det.open && !pre.textContent) {
          const body = r.type === "checkpoint" ? d.data : r.type === "complete" ? d.output : fullEvent(r);
          pre.textContent = pretty(body ?? {});
        }
      });
      this.objList.append(det);
    }
    this.objsDrawn = st.objects.length;
    while (this.objList.childElementCount > OBJECT_ROWS) this.objList.firstElementChild?.remove();
    const hiddenObjs = st.objects.length - this.objList.childElementCount;
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
    this.filterVersion = (this.filterVersion || 0) + 1;
    this.filtered = [];
    this.scanned = 0;
    if (this.state) this.drawLog(this.state);
  }

  /** @param {RunState} st */
  drawLog(st) {
    const recs = st.records;
    for (let i = this.scanned; i < recs.length; i++) if (this.passes(recs[i])) this.filtered.push(i);
    this.scanned = recs.length;
    this.drawChips(st);
    const n = this.filtered.length;
    this.spacer.style.height = `${n * ROW_H}px`;
    this.logInfo.textContent = n === recs.length ? `${n}` : `${n} of ${recs.length}`;
    if (this.follow) {
      const top = Math.max(0, n * ROW_H - this.viewport.clientHeight);
      if (Math.abs(this.viewport.scrollTop - top) > 1) {
        this.viewport.scrollTop = top;
        this.programmaticTop = this.viewport.scrollTop;
      }
    }
    this.drawRows();
  }

  /** @param {RunState} st */
  drawChips(st) {
    for (const [type, count] of st.typeCounts) {
      let chip = this.chipEls.get(type);
      if (!chip) {
        chip = /** @type {HTMLButtonElement} */ (h("button", "drnb-chip"));
        chip.type = "button";
        chip.dataset.type = type;
        const t = type;
        const c = chip;
        chip.addEventListener("click", () => {
          if (this.hidden.has(t)) this.hidden.delete(t);
          else this.hidden.add(t);
          this.remember({ hidden: [...this.hidden] });
          c.classList.toggle("drnb-off", this.hidden.has(t));
          c.setAttribute("aria-pressed", String(!this.hidden.has(t)));
          this.refilter();
        });
        chip.classList.toggle("drnb-off", this.hidden.has(t));
        chip.setAttribute("aria-pressed", String(!this.hidden.has(t)));
        this.chipEls.set(type, chip);
        this.chips.append(chip);
      }
      const text = `${type} ${count}`;
      if (chip.textContent !== text) chip.textContent = text;
    }
  }

  drawRows() {
    const st = this.state;
    if (!st) return;
    const n = this.filtered.length;
    const top = this.viewport.scrollTop;
    const height = this.viewport.clientHeight || 240;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(n, Math.ceil((top + height) / ROW_H) + OVERSCAN);
    // the same rows as drawn: keep them (a click between mousedown and mouseup must find its
    // row still there, and redrawing unchanged rows is wasted work)
    const key = `${first}|${last}|${n}|${this.filterVersion || 0}|${st.records.length}|` +
      `${this.selected ? this.selected.key : ""}`;
    if (key === this.rowsKey && this.rowsState === st) return;
    this.rowsKey = key;
    this.rowsState = st;
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) {
      const r = st.records[this.filtered[i]];
      if (!r) continue;
      const row = h("div", "drnb-row");
      row.dataset.index = String(i);
      row.dataset.type = r.type;
      row.style.top = `${i * ROW_H}px`;
      if (r === this.selected) row.classList.add("drnb-selected");
      const summary = h("span", "drnb-summary", summaryOf(r));
      if (r.type === "started" && this.store.starts.length > 1) {
        // a new `started` begins an attempt: mark it where it is in the log
        const k = this.store.attemptOf(st.from + this.filtered[i]);
        row.classList.add("drnb-attempt-start");
        row.dataset.attempt = String(k);
        summary.prepend(h("span", "drnb-attempt-tag", `attempt ${k}`));
      }
      row.append(
        h("span", "drnb-seq", r.seq ? String(r.seq) : "–"),
        h("span", "drnb-time", fmtRel(r.ts - st.firstTs)),
        h("span", "drnb-type", r.type),
        summary,
      );
      frag.append(row);
    }
    this.rowsEl.replaceChildren(frag);
  }

  onScroll() {
    // scroll events come one per frame: the one after the view's own scroll is the view's only
    // if the log is still where the view put it (a user's scroll in the same frame is kept)
    const own = this.programmaticTop !== null && Math.abs(this.viewport.scrollTop - this.programmaticTop) <= 1;
    this.programmaticTop = null;
    if (!own) {
      const atBottom = this.viewport.scrollTop + this.viewport.clientHeight >= this.viewport.scrollHeight - ROW_H;
      if (!atBottom && this.follow) this.setFollow(false);
      if (!this.follow) this.remember({ logTop: this.viewport.scrollTop });
    }
    this.drawRows();
  }

  /** @param {boolean} on */
  setFollow(on) {
    this.follow = on;
    this.remember(on ? { follow: on } : { follow: on, logTop: this.viewport.scrollTop });
    this.followBtn.textContent = on ? "pause" : "resume";
    this.followBtn.classList.toggle("drnb-on", !on);
    this.root.dataset.follow = on ? "1" : "0";
    if (on && this.state) this.drawLog(this.state);
  }

  /** @param {Rec | null} rec */
  select(rec) {
    this.selected = rec;
    this.remember({ selected: rec ? rec.key : null });
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
// The step waterfall's time axis (shared by a run's view and the comparison of runs)
// ---------------------------------------------------------------------------------------------

/**
 * The axis for some step rows: from the earliest start (a step may begin before the run's
 * first event when writers' clocks differ) over the span to the latest end.
 * @param {{rec: Rec}[]} rows @param {number} firstTs @param {number} lastTs
 */
function waterfallAxis(rows, firstTs, lastTs) {
  let origin = firstTs;
  let end = lastTs;
  for (const { rec } of rows) {
    const start = rec.ts - Math.max(0, num(rec.data.duration_ms) || 0);
    if (start < origin) origin = start;
    if (rec.ts > end) end = rec.ts;
  }
  return { origin, span: Math.max(1, end - origin) };
}

/**
 * Each bar spans [end - duration, end] on the axis; `memo.stepSpan` skips unchanged layouts.
 * @param {{rec: Rec, bar: HTMLElement}[]} rows @param {number} firstTs @param {number} lastTs
 * @param {{stepSpan: string}} memo @param {{origin: number, span: number}} [axis]
 */
function placeBars(rows, firstTs, lastTs, memo, axis) {
  const { origin, span } = axis ?? waterfallAxis(rows, firstTs, lastTs);
  const key = `${origin}|${span}|${rows.length}`;
  if (key === memo.stepSpan) return;
  memo.stepSpan = key;
  for (const { rec, bar } of rows) {
    const ms = Math.max(0, num(rec.data.duration_ms) || 0);
    const start = rec.ts - ms;
    const left = Number.isFinite(start) ? ((start - origin) / span) * 100 : 0;
    const width = (ms / span) * 100;
    bar.style.left = `${Math.min(100, Math.max(0, left)).toFixed(2)}%`;
    bar.style.width = `${Math.min(100, Math.max(0.4, width)).toFixed(2)}%`;
  }
}

// ---------------------------------------------------------------------------------------------
// Comparing runs (dockrion_nb.compare.CompareView): one store per run, fed by one model
// ---------------------------------------------------------------------------------------------

const DIFF_CELLS = 2_500_000; // word-diff table size past which the diff works line by line
const CMP_STEP_ROWS = 100; // waterfall rows per run

/**
 * The kernel sends {kind: "compare", parts: [{run: i, msg}]}: each msg is what a RunView
 * would send for run i. Each run's store reads its state from the `runs` trait's i-th entry
 * and asks for missed events with {kind: "replay", run: i, after}.
 */
class CompareStore {
  /** @param {Model} model */
  constructor(model) {
    this.model = model;
    /** @type {RunStore[]} */
    this.stores = [];
    /** @type {Set<() => void>} */
    this.listeners = new Set();
    this.version = 0;
    this.sync();
  }

  /** One store per run in the `runs` trait. */
  sync() {
    const runs = this.model.get("runs");
    const n = Array.isArray(runs) ? runs.length : 0;
    while (this.stores.length < n) {
      const i = this.stores.length;
      const model = this.model;
      /** @type {Model} */
      const adapter = {
        get: (name) => {
          const all = model.get("runs");
          return Array.isArray(all) && all[i] && typeof all[i] === "object" ? all[i][name] : undefined;
        },
        send: (content) => model.send({ ...content, run: i }),
        on: () => {},
        off: () => {},
      };
      this.stores.push(new RunStore(adapter));
    }
    for (const s of this.stores) if (s.requested === null) s.checkChain();
  }

  /** @param {any} msg */
  handle(msg) {
    if (!msg || msg.kind !== "compare" || !Array.isArray(msg.parts)) return;
    this.sync();
    for (const part of msg.parts) {
      const i = num(part && part.run);
      if (i >= 0 && i < this.stores.length) this.stores[i].handle(part.msg);
    }
    this.notify();
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
}

/** @type {Map<string, CompareStore>} by `_store_key`, as the run stores */
const COMPARE_STORES = new Map();

/** @param {Model} model */
function compareStoreFor(model) {
  const key = str(model.get("_store_key"));
  let store = COMPARE_STORES.get(key);
  if (!store) COMPARE_STORES.set(key, (store = new CompareStore(model)));
  return store;
}

/**
 * A word diff of two texts (whitespace kept), bounded: a common prefix and suffix are cut
 * first, and past DIFF_CELLS the middle is compared line by line.
 * @param {string} a @param {string} b
 * @returns {{op: "same" | "del" | "ins", text: string}[]}
 */
function diffTexts(a, b) {
  let parts = [a.split(/(\s+)/), b.split(/(\s+)/)];
  if (parts[0].length * parts[1].length > DIFF_CELLS * 4) parts = [a.split(/(\n)/), b.split(/(\n)/)];
  const [x, y] = parts;
  let p = 0;
  while (p < x.length && p < y.length && x[p] === y[p]) p++;
  let q = 0;
  while (q < x.length - p && q < y.length - p && x[x.length - 1 - q] === y[y.length - 1 - q]) q++;
  /** @type {{op: "same" | "del" | "ins", text: string}[]} */
  const out = [];
  /** @param {"same" | "del" | "ins"} op @param {string} text */
  const push = (op, text) => {
    if (!text) return;
    const last = out[out.length - 1];
    if (last && last.op === op) last.text += text;
    else out.push({ op, text });
  };
  push("same", x.slice(0, p).join(""));
  const xm = x.slice(p, x.length - q);
  const ym = y.slice(p, y.length - q);
  const n = xm.length;
  const m = ym.length;
  if (n * m > DIFF_CELLS) {
    push("del", xm.join(""));
    push("ins", ym.join(""));
  } else {
    // longest common subsequence, then walk it
    const w = m + 1;
    const t = new Uint32Array((n + 1) * w);
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        t[i * w + j] = xm[i] === ym[j] ? t[(i + 1) * w + j + 1] + 1 : Math.max(t[(i + 1) * w + j], t[i * w + j + 1]);
      }
    }
    let i = 0;
    let j = 0;
    while (i < n && j < m) {
      if (xm[i] === ym[j]) {
        push("same", xm[i]);
        i++;
        j++;
      } else if (t[(i + 1) * w + j] >= t[i * w + j + 1]) {
        push("del", xm[i++]);
      } else {
        push("ins", ym[j++]);
      }
    }
    while (i < n) push("del", xm[i++]);
    while (j < m) push("ins", ym[j++]);
  }
  push("same", x.slice(x.length - q).join(""));
  return out;
}

class CompareUI {
  /** @param {Model} model @param {HTMLElement} el @param {CompareStore} cs */
  constructor(model, el, cs) {
    this.model = model;
    this.cs = cs;
    this.el = el;
    this.frame = 0;
    /** @type {(RunState | null)[]} */
    this.states = [];
    /** @type {Map<string, {a: string, b: string, parts: {op: string, text: string}[]}>} */
    this.diffCache = new Map();
    this.stats = { draws: 0, drawMs: 0 };
    this.root = h("div", "drnb-root drnb-compare");
    /** @type {any} */ (this.root).__drnbView = this;
    this.el.replaceChildren(this.root);
    this.unsubscribe = cs.subscribe(() => this.schedule());
    this.onRuns = () => {
      cs.sync();
      this.schedule();
    };
    model.on("change:runs", this.onRuns);
    this.ticker = setInterval(() => this.schedule(), 1000);
    this.draw();
  }

  destroy() {
    this.unsubscribe();
    this.model.off("change:runs", this.onRuns);
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

  draw() {
    const t0 = performance.now();
    const runs = Array.isArray(this.model.get("runs")) ? this.model.get("runs") : [];
    const stores = this.cs.stores;
    this.states = stores.map((s, i) => latestState(s, this.states[i] ?? null));
    const head = h("div", "drnb-header");
    head.append(h("span", "drnb-title", `Comparing ${stores.length} runs`));
    this.root.replaceChildren(head, this.table(runs), this.outputs(runs), this.waterfall(runs), this.diffs(runs));
    this.root.dataset.events = String(stores.reduce((n, s) => n + s.records.length, 0));
    this.stats.draws++;
    this.stats.drawMs += performance.now() - t0;
  }

  /** @param {any[]} runs @param {number} i */
  runId(runs, i) {
    return str(runs[i] && runs[i].run_id);
  }

  /** @param {any[]} runs */
  table(runs) {
    const table = h("table", "drnb-cmp-table");
    const thead = h("thead");
    const hr = h("tr");
    hr.append(h("th", "", ""));
    this.states.forEach((_, i) => hr.append(h("th", "drnb-cmp-run", this.runId(runs, i))));
    thead.append(hr);
    const body = h("tbody");
    /** @type {[string, string, (st: RunState, i: number) => string][]} */
    const metrics = [
      ["status", "status", (st, i) => st.status(this.cs.stores[i].model)],
      ["events", "events", (st) => String(st.records.length)],
      ["latency", "latency", (st) => {
        const l = st.terminal ? num(st.terminal.data.latency_seconds) : NaN;
        const ms = !Number.isNaN(l) ? l * 1000 : st.terminal ? st.lastTs - st.firstTs : NaN;
        return Number.isFinite(ms) ? fmtDuration(ms) : "–";
      }],
      ["ttft", "time to first token", (st) => {
        const v = st.timeToFirstToken();
        return Number.isFinite(v) ? fmtDuration(v) : "–";
      }],
      ["tokens", "tokens streamed", (st) => String(st.tokenCount)],
      ["rate", "tokens/s", (st) => {
        const v = st.tokensPerSecond();
        return Number.isFinite(v) ? v.toFixed(1) : "–";
      }],
      ["usage", "LLM tokens in / out", (st) => (st.usage.calls ? `${st.usage.input} / ${st.usage.output}` : "–")],
      ["steps", "steps", (st) => String(st.steps.length)],
      ["errors", "errors", (st) => {
        const errs = st.boxes.filter((r) => r.type === "error");
        const failed = st.steps.filter((r) => r.data.status === "error").length;
        const parts = errs.map((r) => `${str(r.data.code)}: ${str(r.data.error)}`);
        if (failed) parts.push(`${failed} failed step${failed === 1 ? "" : "s"}`);
        return parts.length ? clip(parts.join("; "), 200) : "none";
      }],
    ];
    for (const [key, label, fn] of metrics) {
      const tr = h("tr");
      tr.dataset.metric = key;
      tr.append(h("th", "drnb-cmp-metric", label));
      this.states.forEach((st, i) => {
        const td = h("td", "", st ? fn(st, i) : "–");
        if (key === "status" && st) td.dataset.status = td.textContent || "";
        tr.append(td);
      });
      body.append(tr);
    }
    table.append(thead, body);
    return table;
  }

  /** @param {any[]} runs */
  outputs(runs) {
    const sec = h("section", "drnb-section drnb-cmp-outputs");
    sec.append(h("div", "drnb-title", "Outputs"));
    const grid = h("div", "drnb-cmp-grid");
    grid.style.gridTemplateColumns = `repeat(${Math.max(1, this.states.length)}, minmax(220px, 1fr))`;
    this.states.forEach((st, i) => {
      const col = h("div", "drnb-cmp-col");
      col.dataset.run = this.runId(runs, i);
      col.append(h("div", "drnb-run", this.runId(runs, i)));
      const text = st ? st.outputText() : "";
      const err = st && st.terminal && st.terminal.type === "error" ? str(st.terminal.data.error) : "";
      const box = h("div", "drnb-token-text drnb-cmp-output", text || (err ? `error: ${err}` : "(no output yet)"));
      col.append(box);
      grid.append(col);
      requestAnimationFrame(() => (box.scrollTop = box.scrollHeight)); // newest text in view
    });
    sec.append(grid);
    return sec;
  }

  /** Every run's steps on one time axis: each from its own start, the longest run sets the span. @param {any[]} runs */
  waterfall(runs) {
    const sec = h("section", "drnb-section drnb-steps drnb-cmp-steps");
    sec.append(h("div", "drnb-title", "Steps (one time axis, from each run's start)"));
    /** @type {{rows: {rec: Rec, bar: HTMLElement}[], origin: number}[]} */
    const groups = [];
    let span = 1;
    this.states.forEach((st, i) => {
      if (!st) return;
      const steps = st.steps.slice(-CMP_STEP_ROWS);
      const group = h("div", "drnb-cmp-step-group");
      group.dataset.run = this.runId(runs, i);
      group.append(h("div", "drnb-run", `${this.runId(runs, i)}${steps.length ? "" : " (no steps)"}`));
      /** @type {{rec: Rec, bar: HTMLElement}[]} */
      const rows = [];
      for (const r of steps) {
        const row = h("div", "drnb-step-row");
        if (r.data.status === "error") row.dataset.status = "error";
        const track = h("span", "drnb-step-track");
        const bar = h("span", "drnb-step-bar");
        track.append(bar);
        const ms = num(r.data.duration_ms);
        row.append(h("span", "drnb-step-name", str(r.data.node_name)), track,
          h("span", "drnb-step-dur", Number.isNaN(ms) ? "–" : fmtDuration(ms)), h("span", "drnb-step-keys", ""));
        group.append(row);
        rows.push({ rec: r, bar });
      }
      const axis = waterfallAxis(rows, st.started ? st.started.ts : st.firstTs, st.lastTs);
      span = Math.max(span, axis.span);
      groups.push({ rows, origin: axis.origin });
      sec.append(group);
    });
    for (const g of groups) placeBars(g.rows, NaN, NaN, { stepSpan: "" }, { origin: g.origin, span });
    sec.append(h("div", "drnb-muted drnb-cmp-axis", `axis: 0 – ${fmtDuration(span)}`));
    return sec;
  }

  /** The first run's final output against each other run's. @param {any[]} runs */
  diffs(runs) {
    const sec = h("section", "drnb-section drnb-cmp-diff");
    sec.append(h("div", "drnb-title", "Output diff"));
    const base = this.states[0];
    if (!base || this.states.length < 2) return sec;
    for (let k = 1; k < this.states.length; k++) {
      const other = this.states[k];
      if (!other) continue;
      const a = base.outputText();
      const b = other.outputText();
      const block = h("div", "drnb-diff");
      block.dataset.pair = `0-${k}`;
      block.append(h("div", "drnb-muted", `${this.runId(runs, 0)} → ${this.runId(runs, k)}`));
      const pre = h("div", "drnb-diff-text");
      if (a === b) {
        pre.append(h("span", "drnb-diff-same", a ? "(identical)" : "(no output)"));
      } else {
        const key = `${k}`;
        const cached = this.diffCache.get(key);
        const parts = cached && cached.a === a && cached.b === b ? cached.parts : diffTexts(a, b);
        this.diffCache.set(key, { a, b, parts });
        for (const part of parts) {
          pre.append(part.op === "same" ? document.createTextNode(part.text)
            : h(part.op === "del" ? "del" : "ins", `drnb-diff-${part.op}`, part.text));
        }
      }
      block.append(pre);
      sec.append(block);
    }
    return sec;
  }
}

// ---------------------------------------------------------------------------------------------
// anywidget entry points
// ---------------------------------------------------------------------------------------------

/** @param {Model} model */
const isCompare = (model) => str(model.get("_kind")) === "compare";

/** @param {{model: Model}} ctx */
function initialize({ model }) {
  if (isCompare(model)) {
    const cs = compareStoreFor(model);
    /** @param {any} msg */
    const onCompareMsg = (msg) => cs.handle(msg);
    model.on("msg:custom", onCompareMsg);
    return () => {
      model.off("msg:custom", onCompareMsg);
      COMPARE_STORES.delete(str(model.get("_store_key")));
    };
  }
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
  if (isCompare(model)) {
    const ui = new CompareUI(model, el, compareStoreFor(model));
    return () => ui.destroy();
  }
  const view = new RunViewUI(model, el, storeFor(model));
  return () => view.destroy();
}

export default { initialize, render };
export { RunStore, RunState, diffTexts, summarize };
