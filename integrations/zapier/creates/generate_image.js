'use strict';

// "Generate image": one call to POST /v1/generate starts the generation upstream and registers
// a watch of it. The finished image then reaches the "Generation Finished" trigger (through a
// subscription), or the callback URL given here. The bridge validates every field before it
// calls the upstream, so a bad field never starts a generation.

const { apiUrl } = require('../client');
const sample = require('../samples/generate.json');

/** The upstream request body: the prompt, plus any other parameters given as a JSON object. */
const upstreamInput = (z, inputData) => {
  const invalid = (message) => new z.errors.Error(message, 'InvalidInput', 400);
  let input = {};
  if (inputData.input_json) {
    try {
      input = JSON.parse(inputData.input_json);
    } catch (error) {
      throw invalid(`Other Parameters is not valid JSON: ${error.message}`);
    }
    if (input === null || typeof input !== 'object' || Array.isArray(input)) {
      throw invalid('Other Parameters must be a JSON object, e.g. {"steps": 30}');
    }
  }
  if (inputData.prompt) {
    input = { ...input, prompt: inputData.prompt };
  }
  return input;
};

const perform = (z, bundle) => {
  const { inputData } = bundle;
  const body = { input: upstreamInput(z, inputData) };
  if (inputData.callback_url) {
    body.callback_url = inputData.callback_url;
  }
  if (inputData.metadata && Object.keys(inputData.metadata).length) {
    body.metadata = inputData.metadata;
  }
  // Left out when empty: the bridge then uses its default upstream.
  const upstream = (inputData.upstream || '').trim();
  if (upstream) {
    body.upstream = upstream;
  }
  const headers = {};
  if (inputData.idempotency_key) {
    headers['Idempotency-Key'] = inputData.idempotency_key;
  }
  return z
    .request({ url: apiUrl(bundle, '/v1/generate'), method: 'POST', body, headers })
    .then((response) => response.data);
};

module.exports = {
  key: 'generate_image',
  noun: 'Generation',
  display: {
    label: 'Generate Image',
    description: 'Starts an image generation and has the bridge watch it until it finishes.',
  },
  operation: {
    inputFields: [
      { key: 'prompt', label: 'Prompt', type: 'text', required: true },
      {
        key: 'upstream',
        label: 'Upstream',
        type: 'string',
        required: false,
        helpText:
          'Which job API starts the generation: the name of one of the bridge\'s upstreams ' +
          '(its `[upstreams.<name>]` settings, e.g. `runway`). Leave empty for `default`, ' +
          'the bridge\'s main upstream. A name the bridge does not know is refused, with the ' +
          'ones it knows.',
      },
      {
        key: 'input_json',
        label: 'Other Parameters',
        type: 'text',
        required: false,
        helpText:
          'Any other generation parameters, as a JSON object sent to the upstream with the ' +
          'prompt, e.g. `{"negative_prompt": "blurry"}`.',
      },
      {
        key: 'metadata',
        label: 'Metadata',
        dict: true,
        required: false,
        helpText: 'Echoed in the finished event, e.g. a row or order id to match it back.',
      },
      {
        key: 'callback_url',
        label: 'Callback URL',
        type: 'string',
        required: false,
        helpText:
          'Leave empty to receive the result through the "Generation Finished" trigger. ' +
          'Otherwise the finished event is POSTed here too.',
      },
      {
        key: 'idempotency_key',
        label: 'Idempotency Key',
        type: 'string',
        required: false,
        helpText:
          'Repeating a step with the same key answers the first result instead of ' +
          'generating again.',
      },
    ],
    perform,
    sample,
    outputFields: [
      { key: 'job_id', label: 'Job ID' },
      { key: 'watch__id', label: 'Watch ID' },
      { key: 'watch__status', label: 'Watch Status' },
      { key: 'watch__upstream', label: 'Watch Upstream' },
      { key: 'upstream__status', label: 'Upstream Status' },
    ],
  },
};
