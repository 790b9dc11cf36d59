// Loads the TF.js graph model served beside this page and predicts on what the user types or
// uploads. Inputs: JSON — a list for a single-input model (one example, or a batch), or an
// object {input_name: list} — or CSV rows of numbers. `?backend=cpu|webgl|wasm` picks a backend.
'use strict';

const $ = (id) => document.getElementById(id);
let model = null;
let info = null;

function setStatus(state, text) {
  const el = $('status');
  el.dataset.state = state;
  el.textContent = text;
}

function describe(t) {
  const shape = t.shape ? '[' + t.shape.map((d) => (d < 0 ? '?' : d)).join(', ') + ']' : '?';
  return `${t.dtype} ${shape}`;
}

function exampleFor(t) {
  // One zero example of this input, without the batch dimension.
  const dims = (t.shape || [-1]).slice(1).map((d) => (d > 0 ? d : 1));
  const build = (level) => (level === dims.length ? 0 : Array.from({ length: dims[level] }, () => build(level + 1)));
  return build(0);
}

function parseCsv(text) {
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => line.split(/[,;\s]+/).filter((c) => c !== '').map(Number))
    .filter((row) => row.every((v) => !Number.isNaN(v)));
}

function parseInput(text) {
  const names = Object.keys(info.inputs);
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    const rows = parseCsv(text);
    if (!rows.length) throw new Error('the input is neither JSON nor CSV rows of numbers');
    value = rows;
  }
  const byName = Array.isArray(value) || typeof value !== 'object' ? { [names[0]]: value } : value;
  if (!Array.isArray(value) && typeof value === 'object' && names.length === 1 && !(names[0] in value)) {
    throw new Error(`the model's input is named "${names[0]}"`);
  }
  if (Array.isArray(value) && names.length > 1) {
    throw new Error(`this model has ${names.length} inputs: give an object {${names.join(', ')}}`);
  }
  const feeds = {};
  for (const name of names) {
    if (!(name in byName)) throw new Error(`missing input "${name}"`);
    const spec = info.inputs[name];
    let t = tf.tensor(byName[name], undefined, spec.dtype === 'bool' ? 'bool' : spec.dtype);
    const rank = spec.shape ? spec.shape.length : t.rank;
    if (t.rank === rank - 1) t = t.expandDims(0); // one example: add the batch dimension
    if (t.rank !== rank) throw new Error(`input "${name}" has rank ${t.rank}, the model wants ${describe(spec)}`);
    spec.shape.forEach((d, i) => {
      if (i > 0 && d > 0 && t.shape[i] !== d) {
        throw new Error(`input "${name}" has shape [${t.shape}], the model wants ${describe(spec)}`);
      }
    });
    feeds[spec.node.replace(/:0$/, '')] = t;
  }
  return feeds;
}

async function execute(feeds) {
  const keys = Object.keys(info.outputs);
  const nodes = keys.map((k) => info.outputs[k].node.replace(/:0$/, ''));
  let result;
  try {
    result = model.execute(feeds, nodes);
  } catch (err) {
    result = await model.executeAsync(feeds, nodes);
  }
  const list = Array.isArray(result) ? result : [result];
  const out = {};
  for (let i = 0; i < keys.length; i++) {
    out[keys[i]] = { shape: list[i].shape, dtype: list[i].dtype, data: Array.from(await list[i].data()) };
    list[i].dispose();
  }
  return out;
}

function render(outputs) {
  const root = $('result');
  root.textContent = '';
  for (const [name, out] of Object.entries(outputs)) {
    const h = document.createElement('h3');
    h.textContent = `${name} [${out.shape.join(', ')}]`;
    root.appendChild(h);
    const width = out.shape.length > 1 ? out.shape[out.shape.length - 1] : out.data.length;
    const table = document.createElement('table');
    const classes = out.shape.length >= 2 && width > 1;
    if (classes) {
      const head = table.insertRow();
      head.innerHTML = '<th>example</th>' + Array.from({ length: width }, (_, j) => `<th>${j}</th>`).join('') + '<th>top-1</th>';
    }
    for (let r = 0; r * width < out.data.length; r++) {
      const row = out.data.slice(r * width, (r + 1) * width);
      const top = row.indexOf(Math.max(...row));
      const tr = table.insertRow();
      tr.className = 'example';
      tr.insertCell().textContent = String(r);
      row.forEach((v, j) => {
        const td = tr.insertCell();
        td.textContent = Number(v).toPrecision(6);
        if (classes && j === top) td.className = 'top';
      });
      if (classes) {
        const td = tr.insertCell();
        td.className = 'top1';
        td.textContent = String(top);
      }
    }
    root.appendChild(table);
  }
  $('raw').textContent = JSON.stringify(outputs);
}

async function predict() {
  setStatus('running', 'predicting…');
  try {
    const feeds = parseInput($('input').value);
    const started = performance.now();
    const outputs = await execute(feeds);
    const ms = performance.now() - started;
    Object.values(feeds).forEach((t) => t.dispose());
    render(outputs);
    setStatus('done', `done in ${ms.toFixed(1)} ms`);
  } catch (err) {
    setStatus('error', 'error: ' + (err && err.message ? err.message : err));
  }
}

function loadFile(event) {
  const file = event.target.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    const text = String(reader.result);
    let value;
    try {
      value = JSON.parse(text);
    } catch (err) {
      value = parseCsv(text);
    }
    $('input').value = JSON.stringify(value);
    setStatus('ready', `loaded ${file.name}`);
  };
  reader.onerror = () => setStatus('error', `error: cannot read ${file.name}`);
  reader.readAsText(file);
}

async function main() {
  try {
    const wanted = new URLSearchParams(location.search).get('backend');
    if (wanted && !(await tf.setBackend(wanted))) throw new Error(`backend ${wanted} is not available`);
    await tf.ready();
    $('backend').textContent = tf.getBackend();
    info = await (await fetch('api/info')).json();
    $('title').textContent = info.model;
    $('meta').textContent = `version ${info.version ?? '?'} · ${info.format} · TF.js ${tf.version.tfjs}`;
    document.title = `${info.model} · TF.js`;
    const inputs = Object.entries(info.inputs);
    $('hint').textContent = 'Inputs: ' + inputs.map(([n, t]) => `${n} ${describe(t)}`).join(', ') +
      '. Type JSON (one example or a batch) or CSV rows, or load a file.';
    $('input').value = inputs.length === 1
      ? JSON.stringify(exampleFor(inputs[0][1]))
      : JSON.stringify(Object.fromEntries(inputs.map(([n, t]) => [n, exampleFor(t)])));
    model = await tf.loadGraphModel('model/model.json');
    $('predict').disabled = false;
    $('predict').addEventListener('click', predict);
    $('file').addEventListener('change', loadFile);
    setStatus('ready', 'model loaded: type or load an input, then Predict');
  } catch (err) {
    setStatus('error', 'error: ' + (err && err.message ? err.message : err));
  }
}

main();
