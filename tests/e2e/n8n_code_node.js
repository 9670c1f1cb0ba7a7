// Runs the JavaScript of an n8n Code node as n8n's JS task runner does, for
// tests/e2e/test_n8n_workflows.py: in a fresh vm context holding only what the runner gives the
// code (no `crypto`, and `require` refusing built-in modules, as on a default install), wrapped
// in the runner's async function, with `$input`, `$()` and `helpers.getBinaryDataBuffer` over
// the items read from stdin.
//
// stdin:  {"code": "...", "items": [{"json": {...}, "binary": {"data": {"data": "<base64>"}}}],
//          "nodes": {"Node name": [items]}, "now": <Unix seconds> or null}
// stdout: {"result": [items]} or {"error": "the message the node failed with"}
'use strict';
const fs = require('node:fs');
const vm = require('node:vm');

const input = JSON.parse(fs.readFileSync(0, 'utf8'));
const items = (list) => ({ first: () => list[0], last: () => list.at(-1), all: () => list });
const context = vm.createContext({
  Buffer,
  btoa,
  atob,
  TextDecoder,
  TextEncoder,
  setTimeout,
  clearTimeout,
  require: (name) => {
    throw new Error(`Cannot find module '${name}': not in NODE_FUNCTION_ALLOW_BUILTIN`);
  },
  $input: items(input.items),
  $json: input.items[0] && input.items[0].json,
  $: (name) => {
    if (!(name in input.nodes)) throw new Error(`Referenced node doesn't exist: ${name}`);
    return items(input.nodes[name]);
  },
  helpers: {
    getBinaryDataBuffer: async (index, property) => {
      const binary = (input.items[index].binary || {})[property];
      if (!binary) throw new Error(`no binary data '${property}' in item ${index}`);
      return Buffer.from(binary.data, 'base64');
    },
  },
});
if (input.now !== null) vm.runInContext(`Date.now = () => ${input.now * 1000};`, context);
const wrapped =
  `var module = {}; module.exports = async function VmCodeWrapper() {${input.code}\n}()`;
vm.runInContext(wrapped, context).then(
  (result) => process.stdout.write(JSON.stringify({ result })),
  (error) => process.stdout.write(JSON.stringify({ error: String(error?.message ?? error) })),
);
