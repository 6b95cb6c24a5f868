#!/usr/bin/env node
// Bench-only: Auth.js's own session endpoint, for benches/run to compare
// with Portcullis's forward-auth on the same session check.
//
// A plain node:http server that answers every request by handing it to
// `Auth(request, config)` from the pinned @auth/core in
// tests/fixtures/authjs (install it with `npm ci --prefix tests/fixtures/authjs`).
// GET /auth/session with a valid `authjs.session-token` cookie answers the
// session as JSON (and, as Auth.js always does for `jwt` sessions, a
// re-encrypted cookie with a fresh expiry).
//
//   AUTH_SECRET=<secret> node benches/authjs-server.mjs <port>
//
// Listens on 127.0.0.1 only; prints "listening <port>" once ready.
// Stops on SIGTERM/SIGINT.

import http from "node:http";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const core = path.join(here, "..", "tests", "fixtures", "authjs", "node_modules", "@auth", "core");
const { Auth } = await import(pathToFileURL(path.join(core, "index.js")).href);
const { default: Credentials } = await import(
  pathToFileURL(path.join(core, "providers", "credentials.js")).href
);

const port = Number(process.argv[2]);
const secret = process.env.AUTH_SECRET;
if (!Number.isInteger(port) || port <= 0 || port > 65535 || !secret) {
  process.stderr.write("usage: AUTH_SECRET=<secret> node benches/authjs-server.mjs <port>\n");
  process.exit(2);
}

const config = {
  secret,
  trustHost: true,
  basePath: "/auth",
  session: { strategy: "jwt" },
  // Not used: the session comes from Portcullis's cookie. Auth.js wants a provider.
  providers: [
    Credentials({
      credentials: { email: {}, password: {} },
      authorize: async () => null,
    }),
  ],
  // Quiet: no per-request logging in the measurement.
  logger: { error() {}, warn() {}, debug() {} },
};

const origin = `http://127.0.0.1:${port}`;

const server = http.createServer(async (req, res) => {
  try {
    const headers = new Headers();
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
    }
    const hasBody = req.method !== "GET" && req.method !== "HEAD";
    const request = new Request(new URL(req.url, origin), {
      method: req.method,
      headers,
      body: hasBody ? req : undefined,
      duplex: hasBody ? "half" : undefined,
    });
    const response = await Auth(request, config);
    const body = Buffer.from(await response.arrayBuffer());
    const out = {};
    for (const [k, v] of response.headers) {
      if (k === "set-cookie") continue;
      out[k] = v;
    }
    const cookies = response.headers.getSetCookie();
    if (cookies.length) out["set-cookie"] = cookies;
    out["content-length"] = body.length;
    res.writeHead(response.status, out);
    res.end(body);
  } catch (e) {
    res.writeHead(500, { "content-type": "text/plain" });
    res.end(`authjs-server: ${e?.message ?? e}\n`);
  }
});
// wrk keeps its connections for the whole run; the default 5 s idle limit
// only matters between the warm-up and the measurement.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 125_000;
server.listen(port, "127.0.0.1", () => process.stdout.write(`listening ${port}\n`));
const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections(); // idle keep-alive connections would hold close() up
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
