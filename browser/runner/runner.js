// The benchmark's runner, after Speedometer: every suite (one TodoMVC app)
// runs its steps in a fresh iframe, `iterations` times over; each step's time
// runs from its first event until the app's DOM shows the step done (the
// framework's deferred rendering included). The frame is removed after each
// suite, so each iteration builds every app's DOM and heap anew while the old
// ones become garbage, as a long browsing session does.
//
// Query: ?iterations=N&suites=a,b&todos=K. The result goes to the embedder's
// "result" message handler (browser/launcher.py) as JSON, and into the page.
"use strict";

const SUITES = ["vanilla", "react", "vue", "preact", "jquery", "backbone"];
const params = new URLSearchParams(location.search);
const iterations = Number(params.get("iterations") || 10);
const todoCount = Number(params.get("todos") || 100);
const suites = (params.get("suites") || SUITES.join(",")).split(",").filter(Boolean);
const STEP_TIMEOUT_MS = 30000;

const status = (text) => { document.getElementById("status").textContent = text; console.log(text); };

// A tight asynchronous poll: a message to oneself runs after pending
// microtasks and timers that are due, without setTimeout's 4 ms clamp.
const channel = new MessageChannel();
const waiting = [];
channel.port1.onmessage = () => waiting.shift()();
const nextTask = () => new Promise((resolve) => { waiting.push(resolve); channel.port2.postMessage(0); });

async function until(what, predicate) {
  const start = performance.now();
  while (!predicate()) {
    if (performance.now() - start > STEP_TIMEOUT_MS) throw new Error(`timed out waiting for ${what}`);
    await nextTask();
  }
}

function loadFrame(name) {
  return new Promise((resolve, reject) => {
    const frame = document.createElement("iframe");
    frame.onload = () => resolve(frame);
    frame.onerror = () => reject(new Error(`cannot load ${name}`));
    frame.src = `../apps/${name}/index.html`;
    document.getElementById("stage").append(frame);
  });
}

// The steps: each does its synchronous work, and says when it is done.
const STEPS = [
  ["Adding", (doc, win) => {
    const input = doc.querySelector(".new-todo");
    for (let i = 0; i < todoCount; i++) {
      input.value = `Something to do ${i}`;
      input.dispatchEvent(new win.Event("input", { bubbles: true }));
      input.dispatchEvent(new win.KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    }
    return () => doc.querySelectorAll(".todo-list li").length === todoCount;
  }],
  ["Completing", (doc) => {
    // Looked up again before each click: an app that renders the whole list
    // anew on every change (jQuery) has replaced the elements of the last
    // query, while one that renders later (React, Vue, Preact) has not yet.
    for (let i = 0; i < todoCount; i++) doc.querySelectorAll(".todo-list .toggle")[i].click();
    return () => doc.querySelectorAll(".todo-list li.completed").length === todoCount;
  }],
  ["Deleting", (doc) => {
    // From the last: the same index whether or not the list has shrunk yet.
    for (let i = todoCount - 1; i >= 0; i--) doc.querySelectorAll(".todo-list .destroy")[i].click();
    return () => doc.querySelectorAll(".todo-list li").length === 0;
  }],
];

async function runSuite(name) {
  const frame = await loadFrame(name);
  const win = frame.contentWindow, doc = frame.contentDocument;
  await until(`${name} to start`, () => win.todoFramework && doc.querySelector(".new-todo"));
  const steps = {};
  for (const [step, run] of STEPS) {
    const start = performance.now();
    const done = run(doc, win);
    await until(`${name}: ${step}`, done);
    steps[step] = performance.now() - start;
  }
  const framework = win.todoFramework;
  frame.remove();
  return { framework, steps, total: Object.values(steps).reduce((a, b) => a + b, 0) };
}

const geomean = (xs) => Math.exp(xs.reduce((a, x) => a + Math.log(x), 0) / xs.length);

async function main() {
  const t0 = performance.now();
  const result = { benchmark: "todomvc", iterations, todos: todoCount, suites: {},
                   iteration_scores: [], iteration_ends_ms: [],
                   score_formula: "mean over iterations of 60000 / geomean(suite ms)" };
  for (const name of suites) result.suites[name] = { framework: null, times: [], steps: {} };
  for (let it = 0; it < iterations; it++) {
    const times = [];
    for (const name of suites) {
      status(`iteration ${it + 1}/${iterations}: ${name}`);
      const r = await runSuite(name);
      const s = result.suites[name];
      s.framework = r.framework;
      s.times.push(r.total);
      for (const [step, ms] of Object.entries(r.steps)) (s.steps[step] ||= []).push(ms);
      times.push(r.total);
    }
    result.iteration_scores.push(60000 / geomean(times));
    result.iteration_ends_ms.push(performance.now() - t0);
  }
  result.score = result.iteration_scores.reduce((a, b) => a + b, 0) / iterations;
  result.elapsed_ms = performance.now() - t0;
  result.user_agent = navigator.userAgent;
  return result;
}

function report(result) {
  status(`done: score ${result.score === undefined ? "-" : result.score.toFixed(1)}`);
  const text = JSON.stringify(result);
  if (window.webkit && window.webkit.messageHandlers && window.webkit.messageHandlers.result)
    window.webkit.messageHandlers.result.postMessage(text);
  else
    console.log(text);
}

main().then(report, (e) => report({ error: `${e}\n${e && e.stack}` }));
