// Runs a TF.js graph model in Node with the pure-JS CPU backend (no tfjs-node binary needed).
// Reads one JSON request on stdin:
//   {"model_dir": DIR, "inputs": {NAME: {"dtype": "float32", "shape": [...], "data": [...]}},
//    "latency_runs": N}
// and writes one JSON answer on stdout:
//   {"outputs": {NAME: {"shape": [...], "data": [...]}}, "latency_ms": [...], "backend": "cpu"}
// Input and output NAMEs are the SavedModel signature keys kept in model.json.
'use strict';
// TF.js prints notices with console.log; keep stdout for the JSON answer only.
console.log = (...args) => process.stderr.write(args.join(' ') + '\n');
console.info = console.log;
console.warn = console.log;
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

function fileHandler(modelDir) {
  return {
    async load() {
      const modelJson = JSON.parse(fs.readFileSync(path.join(modelDir, 'model.json'), 'utf8'));
      const specs = [];
      const buffers = [];
      for (const group of modelJson.weightsManifest) {
        specs.push(...group.weights);
        for (const p of group.paths) buffers.push(fs.readFileSync(path.join(modelDir, p)));
      }
      const all = Buffer.concat(buffers);
      const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
      return {
        modelTopology: modelJson.modelTopology,
        format: modelJson.format,
        generatedBy: modelJson.generatedBy,
        convertedBy: modelJson.convertedBy,
        signature: modelJson.signature,
        userDefinedMetadata: modelJson.userDefinedMetadata,
        modelInitializer: modelJson.modelInitializer,
        weightSpecs: specs,
        weightData,
      };
    },
  };
}

function toTensor(spec) {
  return tf.tensor(spec.data, spec.shape, spec.dtype);
}

async function predict(model, feeds, outputKeys, outputNodes) {
  let result;
  try {
    result = model.execute(feeds, outputNodes);
  } catch (err) {
    // Control flow or dynamic shapes need the asynchronous executor.
    result = await model.executeAsync(feeds, outputNodes);
  }
  const list = Array.isArray(result) ? result : [result];
  const out = {};
  for (let i = 0; i < outputKeys.length; i++) {
    out[outputKeys[i]] = list[i];
  }
  return out;
}

async function main() {
  const request = JSON.parse(fs.readFileSync(0, 'utf8'));
  await tf.setBackend('cpu');
  await tf.ready();
  const model = await tf.loadGraphModel(fileHandler(request.model_dir));
  const signature = model.modelSignature || {};
  const sigInputs = signature.inputs || {};
  const sigOutputs = signature.outputs || {};
  const outputKeys = Object.keys(sigOutputs);
  const outputNodes = outputKeys.map((k) => sigOutputs[k].name.replace(/:0$/, ''));
  const nodeName = (key) => (sigInputs[key] ? sigInputs[key].name.replace(/:0$/, '') : key);

  const batch = {};
  for (const [key, spec] of Object.entries(request.inputs)) batch[nodeName(key)] = toTensor(spec);
  const outputs = await predict(model, batch, outputKeys, outputNodes);
  const answer = { outputs: {}, latency_ms: [], backend: tf.getBackend(), tfjs_version: tf.version.tfjs };
  for (const [key, t] of Object.entries(outputs)) {
    answer.outputs[key] = { shape: t.shape, dtype: t.dtype, data: Array.from(await t.data()) };
  }

  // Latency: one example at a time, after one warm-up call, measured here so process start-up
  // and JSON transport are not counted.
  const runs = request.latency_runs || 0;
  const n = Object.values(batch)[0] ? Object.values(batch)[0].shape[0] : 0;
  for (let i = -1; i < Math.min(runs, n); i++) {
    const j = Math.max(i, 0);
    const one = {};
    for (const [name, t] of Object.entries(batch)) one[name] = t.slice([j], [1]);
    const start = process.hrtime.bigint();
    const res = await predict(model, one, outputKeys, outputNodes);
    for (const t of Object.values(res)) await t.data();
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    if (i >= 0) answer.latency_ms.push(ms);
  }
  process.stdout.write(JSON.stringify(answer));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + '\n');
  process.exit(1);
});
