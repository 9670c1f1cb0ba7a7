'use strict';

// "Generation finished": a REST hook. Turning the Zap on registers Zapier's target URL as a
// bridge subscription to the two final events, with a signing secret made here; every watch of
// the tenant then notifies it. Turning the Zap off deletes the subscription. Each hook is
// checked against that secret before it runs the Zap. performList reads the same events from
// GET /v1/events, so samples have exactly the keys of live events.

const { apiUrl } = require('../client');
const { newSecret, readEvent } = require('../delivery');
const sample = require('../samples/event.json');

const FINAL_EVENTS = ['job.succeeded', 'job.failed'];
const SAMPLE_COUNT = 3;

const performSubscribe = (z, bundle) =>
  z
    .request({
      url: apiUrl(bundle, '/v1/subscriptions'),
      method: 'POST',
      // The app's own secret, so that the answer always shows one: without it, a bridge with
      // shared delivery.signing_secrets would sign with those and answer `secret: null`.
      body: { url: bundle.targetUrl, events: FINAL_EVENTS, secret: newSecret() },
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

// The webhook body is the event itself: the same envelope GET /v1/events answers. A hook that
// does not verify runs nothing: Zapier's docs have perform return an empty array for a hook
// that must not run the Zap, where an error would reach the Zap's owner for every forgery.
const perform = (z, bundle) => {
  const secret = bundle.subscribeData && bundle.subscribeData.secret;
  const { event, refused } = readEvent(secret, bundle.rawRequest);
  if (refused) {
    z.console.log(`Ignored a hook that is not a signed bridge event: ${refused}`);
    return [];
  }
  return [event];
};

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
      { key: 'upstream', label: 'Upstream' },
      { key: 'timestamp', label: 'Finished At', type: 'datetime' },
      { key: 'image_urls[]', label: 'Image URLs' },
      { key: 'error', label: 'Error' },
      { key: 'error_code', label: 'Error Code' },
    ],
  },
};
