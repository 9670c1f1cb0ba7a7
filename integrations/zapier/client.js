'use strict';

// What every request to the bridge shares: its address, the token, and readable errors.

/** The absolute URL of `path` on the connected bridge (a trailing slash in the setting is fine). */
const apiUrl = (bundle, path) => `${String(bundle.authData.base_url).replace(/\/+$/, '')}${path}`;

/** Send the token on every request; the bridge accepts `Authorization: Bearer <token>`. */
const addToken = (request, z, bundle) => {
  if (bundle.authData && bundle.authData.api_key) {
    request.headers = { ...request.headers, Authorization: `Bearer ${bundle.authData.api_key}` };
  }
  request.headers = { Accept: 'application/json', ...request.headers };
  return request;
};

/**
 * Turn the bridge's problem documents (RFC 9457) into errors a Zap user can act on: the
 * `detail` names the field and what is wrong with it. A 401 is an authentication error, so
 * Zapier asks the user to reconnect; a 429 is retried by Zapier after the bridge's Retry-After.
 */
const explainErrors = (response, z) => {
  if (response.status < 400 || response.skipThrowForStatus) {
    return response;
  }
  let problem = {};
  try {
    problem = JSON.parse(response.content);
  } catch (error) {
    // Not JSON (a proxy in front of the bridge, say): the status line is all there is.
  }
  const detail = problem.detail || problem.title || `HTTP ${response.status}`;
  if (response.status === 429) {
    // The bridge's registration rate limit: Zapier retries the step after Retry-After.
    throw new z.errors.ThrottledError(detail, Number(response.headers.get('retry-after')) || 60);
  }
  if (response.status === 401) {
    const message = `The bridge refused the API token: ${detail}`;
    throw new z.errors.Error(message, 'AuthenticationError', 401);
  }
  throw new z.errors.Error(detail, problem.type || 'BridgeError', response.status);
};

module.exports = { apiUrl, addToken, explainErrors };
