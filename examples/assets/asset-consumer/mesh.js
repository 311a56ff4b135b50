'use strict';
// Calls to other services by name, through the sidecar ($HTTP_PROXY) as every app of the mesh.
//
// Node's http does not read HTTP_PROXY, so this does: a request for
// http://asset-mgr-ms-svc:8080/x goes to the proxy's host and port with the absolute URL as its
// request line (`GET http://asset-mgr-ms-svc:8080/x HTTP/1.1`), over kept-alive connections with
// Nagle's algorithm off. Hosts that NO_PROXY names (the default: loopback) are dialled directly.

const http = require('node:http');

const MAX_RESPONSE_BYTES = 1024 * 1024;

class UpstreamError extends Error {
  /** A call that got no usable answer: unreachable, timed out, cut, or an answer too large. */
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

/** `{host, port}` of $HTTP_PROXY (or $http_proxy), or null when there is none. */
function proxyFromEnv(env) {
  const value = env.HTTP_PROXY || env.http_proxy;
  if (!value) return null;
  const url = new URL(value.includes('://') ? value : `http://${value}`);
  return { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port) || 80 };
}

/** A predicate: does NO_PROXY exempt this host (exact names, `.suffix` domains, or `*`)? */
function bypassFromEnv(env) {
  const entries = (env.NO_PROXY || env.no_proxy || '')
    .split(',')
    .map((entry) => entry.trim().toLowerCase())
    .filter(Boolean);
  return (host) => {
    const name = host.toLowerCase();
    return entries.some(
      (entry) =>
        entry === '*' ||
        name === entry.replace(/^\./, '') ||
        name.endsWith(entry.startsWith('.') ? entry : `.${entry}`),
    );
  };
}

class MeshClient {
  /**
   * @param {object} [options] `env` (default process.env), `timeoutMs` per call (5 s),
   *   `maxSockets` per destination (64)
   */
  constructor({ env = process.env, timeoutMs = 5000, maxSockets = 64 } = {}) {
    this.proxy = proxyFromEnv(env);
    this.bypass = bypassFromEnv(env);
    this.timeoutMs = timeoutMs;
    // Idle connections are closed after 4 s, before a peer's usual 5 s keep-alive timeout
    // would close them under a request.
    this.agent = new http.Agent({
      keepAlive: true,
      maxSockets,
      maxFreeSockets: 16,
      scheduling: 'lifo',
      timeout: 4000,
    });
  }

  /**
   * One call; resolves to `{status, headers, body}` (body a Buffer), whatever the status.
   * A call on a kept-alive connection that the peer had closed is sent again once, on a new
   * one (callers use this for GETs and for publishes whose events carry ids).
   */
  async request(method, url, { headers = {}, body = null, timeoutMs = this.timeoutMs } = {}) {
    try {
      return await this.#send(method, url, headers, body, timeoutMs);
    } catch (error) {
      if (error.reusedSocket && error.code === 'ECONNRESET') {
        return this.#send(method, url, headers, body, timeoutMs);
      }
      throw error;
    }
  }

  #send(method, url, headers, body, timeoutMs) {
    const target = new URL(url);
    const viaProxy = this.proxy !== null && !this.bypass(target.hostname);
    const options = {
      method,
      agent: this.agent,
      host: viaProxy ? this.proxy.host : target.hostname,
      port: viaProxy ? this.proxy.port : Number(target.port) || 80,
      path: viaProxy ? target.href : target.pathname + target.search,
      headers: { ...headers, host: target.host },
    };
    if (body !== null) {
      options.headers['content-type'] = 'application/json';
      options.headers['content-length'] = Buffer.byteLength(body);
    }
    return new Promise((resolve, reject) => {
      const req = http.request(options);
      let settled = false;
      const settle = (outcome, value) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        outcome(value);
      };
      const fail = (error) => {
        const wrapped =
          error instanceof UpstreamError ? error : new UpstreamError(error.message, error.code);
        wrapped.reusedSocket = req.reusedSocket;
        settle(reject, wrapped);
        req.destroy();
      };
      const timer = setTimeout(
        () => fail(new UpstreamError(`no answer within ${timeoutMs} ms`, 'ETIMEDOUT')),
        timeoutMs,
      );
      req.on('socket', (socket) => socket.setNoDelay(true));
      req.on('error', fail);
      req.on('response', (res) => {
        const chunks = [];
        let size = 0;
        res.on('data', (chunk) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) {
            fail(new UpstreamError(`an answer over ${MAX_RESPONSE_BYTES} bytes`, 'E2BIG'));
          } else {
            chunks.push(chunk);
          }
        });
        res.on('error', fail);
        res.on('close', () => {
          if (!res.complete) {
            fail(new UpstreamError('the connection closed mid-answer', 'ECONNRESET'));
          }
        });
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          settle(resolve, { status: res.statusCode, headers: res.headers, body });
        });
      });
      req.end(body === null ? undefined : body);
    });
  }

  /** Close the kept-alive connections (at shutdown). */
  close() {
    this.agent.destroy();
  }
}

module.exports = { MeshClient, UpstreamError, proxyFromEnv, bypassFromEnv };
