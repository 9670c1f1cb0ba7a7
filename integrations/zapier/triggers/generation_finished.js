'use strict';

// "Generation finished": a REST hook. Turning the Zap on registers Zapier's target URL as a
// bridge subscription to the two final events; every watch of the tenant then notifies it.
// Turning the Zap off deletes the subscription. performList reads the same events from
// GET /v1/events, so samples and deduplication (on `id`) match live events exactly.

const { apiUrl } = require('../client');
const sample = require('../samples/event.json');

const FINAL_EVENTS = ['job.succeeded', 'job.failed'];
const SAMPLE_COUNT = 3;

const performSubscribe = (z, bundle) =>
  z
    .request({
      url: apiUrl(bundle, '/v1/subscriptions'),
      method: 'POST',
      body: { url: bundle.targetUrl, events: FINAL_EVENTS },
    })
    .then((response) => response.data); // kept by Zapier as bundle.subscribeData

const performUnsubscribe = (z, bundle) =>
  z
    .request({
      url: apiUrl(bundle, `/v1/subscriptions/${encodeURIComponent(bundle.subscribeData.id)}`),
      method: 'DELETE',
      // 404: already gone (deleted elsewhere, or removed after an endpoint answered 410).
      skipThrowForStatus: true,
    })
    .then((response) => {
      if (response.status !== 204 && response.status !== 404) {
        response.throwForStatus();
      }
      return { id: bundle.subscribeData.id };
    });

// The webhook body is the event itself: the same envelope GET /v1/events answers.
const perform = (z, bundle) => [bundle.cleanedRequest];

const performList = (z, bundle) =>
  z
    .request({
      url: apiUrl(bundle, '/v1/events'),
      params: { type: FINAL_EVENTS.join(','), limit: SAMPLE_COUNT },
    })
    .then((response) => response.data);

module.exports = {
  key: 'generation_finished',
  noun: 'Generation',
  display: {
    label: 'Generation Finished',
    description: 'Triggers when an image generation watched by the bridge succeeds or fails.',
  },
  operation: {
    type: 'hook',
    performSubscribe,
    performUnsubscribe,
    perform,
    performList,
    sample,
    outputFields: [
      { key: 'id', label: 'Event ID' },
      { key: 'type', label: 'Event Type' },
      { key: 'status', label: 'Status' },
      { key: 'job_id', label: 'Job ID' },
      { key: 'watch_id', label: 'Watch ID' },
      { key: 'timestamp', label: 'Finished At', type: 'datetime' },
      { key: 'image_urls[]', label: 'Image URLs' },
      { key: 'error', label: 'Error' },
      { key: 'error_code', label: 'Error Code' },
    ],
  },
};
