'use strict';

// The app's tests, run with zapier-platform-core's app tester against a real bridge:
//
//   BRIDGE_URL       the bridge (its security.allow_private_callbacks on, to reach the receiver)
//   BRIDGE_TOKEN     one of its API tokens
//   RECEIVER_URL     a `webhook-bridge listen --record FILE` receiver, standing in for Zapier's
//   RECEIVER_RECORD  hook URLs, and the FILE it records every request to
//   GENERATE_INPUT   optional: a JSON object of extra upstream parameters for the generation
//   UPSTREAM         optional: the name of an upstream of the bridge (besides `default`) that
//                    starts the generation; without it the default upstream does
//   SIGNING_SECRETS  optional: the bridge's delivery.signing_secrets, current first, as a JSON
//                    list of whsec_ strings; with two or more, a rotation's deliveries are checked
//
// Without BRIDGE_URL only the app definition is checked. tests/e2e/test_zapier_app.py starts
// all of these and runs `npm test`.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const { describe, it } = require('node:test');

const { Webhook } = require('standardwebhooks');
const zapier = require('zapier-platform-core');
const { recurseReplaceBank } = require('zapier-platform-core/src/tools/cleaner');
const { flattenPaths } = require('zapier-platform-core/src/tools/data');
const schema = require('zapier-platform-core/src/tools/schema');

const App = require('../index');
const { newSecret } = require('../delivery');
const sample = require('../samples/event.json');

const appTester = zapier.createAppTester(App);
const env = process.env;
const live = env.BRIDGE_URL ? {} : { skip: 'BRIDGE_URL is not set: no bridge to test against' };
const authData = { base_url: env.BRIDGE_URL, api_key: env.BRIDGE_TOKEN };
const trigger = App.triggers.generation_finished.operation;
const DEADLINE_MS = 45000;

/** Poll `probe` until it returns something truthy; fail after `ms` naming `what`. */
const waitFor = async (probe, what, ms = DEADLINE_MS) => {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`not within ${ms} ms: ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
};

/** The requests the receiver recorded at `path`, oldest first. */
const recorded = (path) => {
  let text = '';
  try {
    text = fs.readFileSync(env.RECEIVER_RECORD, 'utf8');
  } catch (error) {
    return [];
  }
  return text
    .split('\n')
    .filter((line) => line.endsWith('}')) // a line being written is not complete yet
    .map((line) => JSON.parse(line))
    .filter((hook) => hook.path === path);
};

/**
 * A recorded request as Zapier hands it to a hook's perform, in `bundle.rawRequest`: headers
 * other than Content-Length and Content-Type prefixed with `Http-`, all in Camel-Case (Zapier's
 * CLI docs: `X-Time-GMT` becomes `Http-X-Time-Gmt`), the body as received.
 */
const rawRequest = (hook) => {
  const camel = (name) => name.replace(/(^|-)([a-z])/g, (all, dash, c) => dash + c.toUpperCase());
  const headers = {};
  for (const [name, value] of Object.entries(hook.headers)) {
    const plain = ['content-length', 'content-type'].includes(name);
    headers[camel(plain ? name : `http-${name}`)] = value;
  }
  return { method: hook.method, querystring: hook.query, headers, content: hook.body };
};

/** Zapier's parsed copy of a JSON hook, `bundle.cleanedRequest`: the body and a `querystring`. */
const cleanedRequest = (hook) => ({
  ...JSON.parse(hook.body),
  querystring: Object.fromEntries(new URLSearchParams(hook.query)),
});

/** `hook` signed again by the library with `secret`, as if sent at `when` (a Date). */
const resigned = (hook, secret, when) => {
  const id = hook.headers['webhook-id'];
  const headers = {
    ...hook.headers,
    'webhook-timestamp': String(Math.floor(when.getTime() / 1000)),
    'webhook-signature': new Webhook(secret).sign(id, when, hook.body),
  };
  return { ...hook, headers };
};

/**
 * The connection label Zapier shows: the template's {{curlies}} filled, by core's own curly
 * renderer, from what the auth test returned (Zapier's CLI code generator: "If you return
 * `response.data` from your test, then your label can be `{{X}}`"); what is not found is empty.
 */
const connectionLabel = (template, tested) => {
  const bank = {};
  for (const [path, value] of Object.entries(flattenPaths(tested))) {
    bank[`{{${path}}}`] = value;
  }
  return String(recurseReplaceBank(template, bank)).replace(/{{.*?}}/g, '');
};

/** GET /v1/subscriptions directly, not through the app: what the bridge really holds. */
const subscriptionIds = async () => {
  const response = await fetch(`${env.BRIDGE_URL}/v1/subscriptions`, {
    headers: { Authorization: `Bearer ${env.BRIDGE_TOKEN}` },
  });
  assert.equal(response.status, 200, await response.clone().text());
  return (await response.json()).data.map((subscription) => subscription.id);
};

describe('the app definition', () => {
  it('is valid for the Zapier platform', () => {
    assert.deepEqual(schema.validateApp(schema.compileApp({ ...App })), []);
  });

  it('has a trigger sample shaped like the webhook envelope, id first', () => {
    assert.equal(Object.keys(sample)[0], 'id');
    assert.deepEqual(Object.keys(sample).slice(1), [
      'type', 'timestamp', 'watch_id', 'job_id', 'upstream', 'status', 'image_urls', 'error',
      'error_code', 'metadata', 'data',
    ]);
  });

  it('sends the Upstream field as `upstream`, trimmed, and leaves it out when empty', async () => {
    const sent = [];
    const z = {
      request: (options) => {
        sent.push(options.body);
        return Promise.resolve({ data: {} });
      },
      errors: { Error },
    };
    const perform = App.creates.generate_image.operation.perform;
    const bundle = (upstream) => ({
      authData: { base_url: 'https://bridge.example' },
      inputData: { prompt: 'p', upstream },
    });
    await perform(z, bundle(' runway '));
    await perform(z, bundle(''));
    await perform(z, bundle(undefined));
    assert.deepEqual(sent.map((body) => body.upstream), ['runway', undefined, undefined]);
    assert.ok(!('upstream' in sent[1]) && !('upstream' in sent[2]));
  });
});

describe('authentication', live, () => {
  it('accepts a valid token and labels the connection with its tenant', async () => {
    const me = await appTester(App.authentication.test, { authData });
    assert.equal(me.authenticated, true);
    assert.equal(typeof me.tenant, 'string');
    if (env.BRIDGE_TENANT) {
      assert.equal(me.tenant, env.BRIDGE_TENANT);
    }
    assert.ok(me.tenant);
    assert.equal(connectionLabel(App.authentication.connectionLabel, me), me.tenant);
  });

  it('refuses a wrong token with a readable error', async () => {
    const wrong = { ...authData, api_key: 'wbt_not_a_real_token' };
    await assert.rejects(appTester(App.authentication.test, { authData: wrong }), (error) => {
      assert.match(error.message, /refused the API token/);
      assert.match(error.message, /AuthenticationError/);
      return true;
    });
  });
});

describe('generation finished, end to end', live, () => {
  const path = `/hooks/zapier-${crypto.randomUUID()}`;
  const state = {};
  // Each step builds on the previous ones: after a failure the rest skip instead of timing out.
  const after = (t, ...needed) => {
    const missing = needed.filter((name) => !state[name]);
    if (missing.length) {
      t.skip(`an earlier step failed: no ${missing.join(', ')}`);
    }
    return missing.length === 0;
  };

  it('subscribes: the bridge holds a subscription to the target URL', async () => {
    const bundle = { authData, targetUrl: `${env.RECEIVER_URL}${path}` };
    state.subscription = await appTester(trigger.performSubscribe, bundle);
    assert.match(state.subscription.id, /^sub_/);
    assert.equal(state.subscription.url, bundle.targetUrl);
    assert.deepEqual([...state.subscription.events].sort(), ['job.failed', 'job.succeeded']);
    // The app's own secret: shown even by a bridge whose shared signing secrets sign the rest.
    assert.match(state.subscription.secret, /^whsec_/);
    assert.ok((await subscriptionIds()).includes(state.subscription.id));
  });

  it('generates: the action starts a job and a watch without a callback', async (t) => {
    if (!after(t, 'subscription')) return;
    const extra = JSON.parse(env.GENERATE_INPUT || '{}');
    const inputData = {
      prompt: 'a lighthouse at dusk',
      input_json: JSON.stringify(extra),
      metadata: { zap_run: path },
      upstream: env.UPSTREAM || '',
    };
    state.generated = await appTester(App.creates.generate_image.operation.perform, {
      authData,
      inputData,
    });
    assert.equal(typeof state.generated.job_id, 'string');
    assert.equal(state.generated.watch.job_id, state.generated.job_id);
    assert.equal(state.generated.watch.callback_url, null);
    assert.equal(state.generated.watch.upstream, env.UPSTREAM || 'default');
  });

  /** The trigger's perform on `hook`, as Zapier would call it for this subscription. */
  const perform = (hook, subscribeData = state.subscription) =>
    appTester(trigger.perform, {
      authData,
      subscribeData,
      rawRequest: rawRequest(hook),
      cleanedRequest: cleanedRequest(hook),
    });

  it('delivers the finished event to the target URL', async (t) => {
    if (!after(t, 'subscription', 'generated')) return;
    state.hook = await waitFor(
      () => recorded(path).find((h) => JSON.parse(h.body).job_id === state.generated.job_id),
      `the finished event at ${path}`,
    );
    state.event = JSON.parse(state.hook.body);
    assert.match(state.event.id, /^evt_/);
    assert.ok(['job.succeeded', 'job.failed'].includes(state.event.type));
    assert.deepEqual(state.event.metadata, { zap_run: path });
    assert.equal(state.event.upstream, env.UPSTREAM || 'default');
    assert.deepEqual(Object.keys(state.event), Object.keys(sample));
  });

  it('performs: the verified hook body, as sent, is the trigger output', async (t) => {
    if (!after(t, 'event')) return;
    state.performed = await perform(state.hook);
    assert.deepEqual(state.performed, [state.event]);
  });

  it('lists the same event, with the same id and keys, from GET /v1/events', async (t) => {
    if (!after(t, 'event', 'performed')) return;
    const listed = await appTester(trigger.performList, { authData });
    assert.ok(Array.isArray(listed));
    const same = listed.find((event) => event.id === state.event.id);
    assert.ok(same, `event ${state.event.id} not in ${JSON.stringify(listed.map((e) => e.id))}`);
    assert.deepEqual(same, state.event);
    assert.deepEqual(Object.keys(state.performed[0]), Object.keys(same));
  });

  it('runs nothing for a hook that does not verify', async (t) => {
    if (!after(t, 'event', 'performed')) return;
    const { hook, subscription } = state;
    const forged = { ...hook, body: hook.body.replace(state.generated.job_id, 'job_forged') };
    assert.notEqual(forged.body, hook.body);
    const unsigned = { ...hook, headers: { ...hook.headers } };
    delete unsigned.headers['webhook-signature'];
    const other = { ...subscription, secret: newSecret() };
    const now = new Date();
    const stale = new Date(now.getTime() - 10 * 60 * 1000);

    assert.deepEqual(await perform(forged), [], 'an altered body');
    assert.deepEqual(await perform(unsigned), [], 'no signature');
    assert.deepEqual(await perform(hook, other), [], 'checked with another key');
    assert.deepEqual(await perform(hook, { id: subscription.id }), [], 'no secret to check with');
    // Signed again now it passes, signed ten minutes ago it does not: only the time differs.
    assert.deepEqual(await perform(resigned(hook, subscription.secret, now)), [state.event]);
    assert.deepEqual(await perform(resigned(hook, subscription.secret, stale)), [], 'stale');
  });

  it('unsubscribes: the subscription is gone, and a second unsubscribe is harmless', async (t) => {
    if (!after(t, 'subscription')) return;
    const bundle = { authData, subscribeData: state.subscription };
    await appTester(trigger.performUnsubscribe, bundle);
    assert.ok(!(await subscriptionIds()).includes(state.subscription.id));
    await appTester(trigger.performUnsubscribe, bundle);
  });

  it('reports a field the bridge refuses, naming it', async () => {
    const inputData = { prompt: 'x', callback_url: 'not a url' };
    await assert.rejects(
      appTester(App.creates.generate_image.operation.perform, { authData, inputData }),
      /callback_url/,
    );
  });

  it('reports an upstream the bridge does not know, with the ones it knows', async () => {
    const inputData = { prompt: 'x', upstream: 'no-such-upstream' };
    await assert.rejects(
      appTester(App.creates.generate_image.operation.perform, { authData, inputData }),
      /no upstream is named 'no-such-upstream'; the configured ones are default/,
    );
  });
});

const rotation = JSON.parse(env.SIGNING_SECRETS || '[]');
const rotating =
  env.BRIDGE_URL && rotation.length >= 2
    ? {}
    : { skip: 'SIGNING_SECRETS does not list two secrets: no rotation to test against' };

describe('a delivery signed during a secret rotation', rotating, () => {
  it('runs the Zap whichever of the signing secrets the subscription holds', async () => {
    // A watch without a secret of its own: the bridge signs its callback with every secret.
    const path = `/hooks/zapier-rotation-${crypto.randomUUID()}`;
    const extra = JSON.parse(env.GENERATE_INPUT || '{}');
    const inputData = {
      prompt: 'a lighthouse at dawn',
      input_json: JSON.stringify(extra),
      callback_url: `${env.RECEIVER_URL}${path}`,
    };
    const generated = await appTester(App.creates.generate_image.operation.perform, {
      authData,
      inputData,
    });
    const hook = await waitFor(() => recorded(path)[0], `the finished event at ${path}`);
    const event = JSON.parse(hook.body);
    assert.equal(event.job_id, generated.job_id);
    assert.equal(hook.headers['webhook-signature'].split(' ').length, rotation.length);
    const perform = (secret) =>
      appTester(trigger.perform, {
        authData,
        subscribeData: { id: 'sub_rotation', secret },
        rawRequest: rawRequest(hook),
        cleanedRequest: cleanedRequest(hook),
      });
    for (const secret of rotation) {
      assert.deepEqual(await perform(secret), [event]);
    }
    assert.deepEqual(await perform(newSecret()), []);
  });
});
