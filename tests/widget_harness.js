// The fake anywidget host used by tests/browser_harness.py (see there).
import widget from "./widget.js";

class FakeModel {
  constructor(state) {
    this.state = { ...state };
    this.handlers = new Map();
    this.sent = [];
  }
  get(name) { return this.state[name]; }
  set(name, value) {
    this.state[name] = value;
    this.trigger(`change:${name}`, value);
  }
  save_changes() {}
  on(event, cb) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(cb);
  }
  off(event, cb) {
    const set = this.handlers.get(event);
    if (!set) return;
    if (cb) set.delete(cb); else set.clear();
  }
  trigger(event, ...args) {
    for (const cb of [...(this.handlers.get(event) || [])]) cb(...args);
  }
  send(content) { this.sent.push(content); }
}

// anywidget gives initialize and every render a different proxy of the model; so do we
const proxy = (model) => ({
  get: (k) => model.get(k),
  set: (k, v) => model.set(k, v),
  save_changes: () => model.save_changes(),
  send: (c) => model.send(c),
  on: (e, cb) => model.on(e, cb),
  off: (e, cb) => model.off(e, cb),
  widget_manager: window.__fakeManager,
});
window.__fakeManager = {};

const models = new Map();
let nextId = 1;
const frameGaps = { last: 0, max: 0, count: 0, running: false };

window.H = {
  models,
  async create(state) {
    const id = nextId++;
    const model = new FakeModel(state);
    const cleanup = await widget.initialize?.({ model: proxy(model) });
    models.set(id, { model, cleanup, views: [] });
    return id;
  },
  async render(id) {
    const entry = models.get(id);
    const el = document.createElement("div");
    el.className = "host";
    el.dataset.model = String(id);
    el.dataset.view = String(entry.views.length);
    document.getElementById("hosts").append(el);
    const cleanup = await widget.render({ model: proxy(entry.model), el });
    entry.views.push({ el, cleanup });
    return entry.views.length - 1;
  },
  // What JupyterLab does when a widget's output is updated (display_id): the output's node is
  // emptied (the old view is not destroyed), a new view is rendered, then attached.
  async rerender(id, i = 0) {
    const entry = models.get(id);
    const host = entry.views[i].el;
    host.textContent = "Loading widget...";
    const el = document.createElement("div");
    const cleanup = await widget.render({ model: proxy(entry.model), el });
    await new Promise((resolve) => requestAnimationFrame(resolve));
    host.replaceChildren(el);
    entry.views[i] = { el: host, cleanup, replaced: entry.views[i] };
  },
  push(id, msgs) { for (const m of msgs) models.get(id).model.trigger("msg:custom", m, []); },
  set(id, changes) { for (const [k, v] of Object.entries(changes)) models.get(id).model.set(k, v); },
  apply(id, ops) {
    const model = models.get(id).model;
    for (const [op, a, b] of ops) {
      if (op === "msg") model.trigger("msg:custom", a, []);
      else model.set(a, b);
    }
  },
  // ops as a JSON string (much cheaper to hand over than a structured argument); returns and
  // clears what the front end sent back
  applyJson(id, json) {
    if (json) this.apply(id, JSON.parse(json));
    return models.get(id).model.sent.splice(0);
  },
  sent(id) { return models.get(id).model.sent; },
  view(id, i = 0) { return models.get(id).views[i].el.querySelector(".drnb-root").__drnbView; },
  records(id, i = 0) { return this.view(id, i).store.records.length; },
  // Deliver batches (a JSON string) spaced in time, like messages from a kernel; resolves
  // after the first frame drawn once the last one is in: {startMs, endMs, maxGapMs, frames}.
  pushSpaced(id, batchesJson, intervalMs) {
    const batches = JSON.parse(batchesJson);
    return new Promise((resolve) => {
      let k = 0;
      this.startFrameWatch();
      const startMs = performance.now();
      const step = () => {
        this.push(id, [batches[k++]]);
        if (k < batches.length) setTimeout(step, intervalMs);
        else requestAnimationFrame(() => requestAnimationFrame(() => {
          const endMs = performance.now();
          resolve({ startMs, endMs, ...this.stopFrameWatch() });
        }));
      };
      step();
    });
  },
  // Longest gap between animation frames: how long the page was unresponsive.
  startFrameWatch() {
    frameGaps.last = performance.now(); frameGaps.max = 0; frameGaps.count = 0; frameGaps.running = true;
    const tick = (t) => {
      if (!frameGaps.running) return;
      frameGaps.max = Math.max(frameGaps.max, t - frameGaps.last);
      frameGaps.last = t; frameGaps.count++;
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  },
  stopFrameWatch() { frameGaps.running = false; return { maxGapMs: frameGaps.max, frames: frameGaps.count }; },
};
window.__harnessReady = true;
