'use strict';

// A webhook from the bridge as Zapier hands it to the hook trigger: its Standard Webhooks
// signature checked with the subscription's secret, its event read from the bytes that were
// signed (never from Zapier's parsed copy, which adds members of its own).

const crypto = require('node:crypto');
const { Webhook } = require('standardwebhooks');

const SIGNED_HEADERS = ['webhook-id', 'webhook-timestamp', 'webhook-signature'];

/** A fresh signing secret: `whsec_` and the base64 of 32 random bytes, as the bridge makes. */
const newSecret = () => `whsec_${crypto.randomBytes(32).toString('base64')}`;

/**
 * The Standard Webhooks headers among `headers`, under their own names: Zapier hands a hook's
 * headers prefixed and Camel-Cased (`webhook-id` arrives as `Http-Webhook-Id`).
 */
const signedHeaders = (headers = {}) => {
  const found = {};
  for (const [name, value] of Object.entries(headers)) {
    const plain = name.toLowerCase().replace(/^http-/, '');
    if (SIGNED_HEADERS.includes(plain)) {
      found[plain] = String(value);
    }
  }
  return found;
};

/**
 * `{ event }` when `rawRequest` (Zapier's `bundle.rawRequest`) is signed with `secret` and
 * carries a JSON object; else `{ refused }` saying why. Any one of several space-separated
 * signatures will do (the bridge signs with every secret of a rotation), and a timestamp more
 * than five minutes away from now is refused (the library's tolerance), so a recorded delivery
 * cannot be replayed later.
 */
const readEvent = (secret, rawRequest) => {
  if (!secret) {
    return { refused: 'the subscription has no signing secret: turn the Zap off and on again' };
  }
  if (!rawRequest || typeof rawRequest.content !== 'string') {
    return { refused: 'the request has no body' };
  }
  let event;
  try {
    event = new Webhook(secret).verify(rawRequest.content, signedHeaders(rawRequest.headers));
  } catch (error) {
    // A missing header, no matching signature, a stale timestamp, a body that is not JSON.
    return { refused: error.message };
  }
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    return { refused: 'the body is not a JSON object' };
  }
  return { event };
};

module.exports = { newSecret, readEvent, signedHeaders };
