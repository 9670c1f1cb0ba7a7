'use strict';

// Custom authentication: the bridge's address and one of its API tokens. Each token is a
// tenant, so the connection is labelled with the tenant the bridge reports. The label's
// {{curlies}} are filled from what `test` returns: `response.data`, hence `{{tenant}}`.

const { apiUrl } = require('./client');

module.exports = {
  type: 'custom',
  fields: [
    {
      key: 'base_url',
      label: 'Bridge URL',
      required: true,
      type: 'string',
      helpText: 'Where your Webhook Bridge answers, e.g. `https://bridge.example.com`.',
    },
    {
      key: 'api_key',
      label: 'API token',
      required: true,
      type: 'password',
      helpText: 'A bridge API token (`wbt_...`), made with `webhook-bridge hash-token`.',
    },
  ],
  test: (z, bundle) => z.request({ url: apiUrl(bundle, '/v1/me') }).then((r) => r.data),
  connectionLabel: '{{tenant}}',
};
