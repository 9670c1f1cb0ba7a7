'use strict';

// The Zapier app: API-token authentication against GET /v1/me, the "Generation Finished"
// REST-hook trigger and the "Generate Image" action. `zapier push` uploads it.

const authentication = require('./authentication');
const { addToken, explainErrors } = require('./client');
const generationFinished = require('./triggers/generation_finished');
const generateImage = require('./creates/generate_image');

module.exports = {
  version: require('./package.json').version,
  platformVersion: require('zapier-platform-core').version,
  authentication,
  beforeRequest: [addToken],
  afterResponse: [explainErrors],
  triggers: { [generationFinished.key]: generationFinished },
  creates: { [generateImage.key]: generateImage },
};
