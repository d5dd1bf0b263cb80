#!/usr/bin/env node
// A tiny static server for trying the built playground without the Rust server.
//
//   node dev-server.mjs [--port 5180] [--no-dev-signin] [--no-operations]
//
// Serves dist/ under /playground/, answers GET /dev/users and POST /dev/token
// with fake data, and /playground/operations.json with one example. Everything
// else (including /graphql) is a 404: there is no GraphQL server behind it.
// --no-dev-signin makes /dev/* answer 404 (like a real deployment);
// --no-operations makes operations.json answer 404. No dependencies.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const portArg = args.indexOf('--port');
const port = Number(portArg >= 0 ? args[portArg + 1] : process.env.PORT || 5180);
const devSignIn = !flag('--no-dev-signin');
const operations = !flag('--no-operations');

const dist = fileURLToPath(new URL('./dist/', import.meta.url));

const USERS = [
  { id: 'cust-0001', name: 'Ada Lovelace', role: 'customer' },
  { id: 'agent-01', name: 'Grace Hopper', role: 'agent' },
];

const OPERATIONS = [
  {
    name: 'HomeScreen',
    query: 'query HomeScreen($first: Int) {\n  __typename\n  viewer {\n    id\n    name\n  }\n}\n',
    variables: '{ "first": 5 }',
  },
  { name: 'Typename', query: 'query Typename {\n  __typename\n}\n' },
];

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.ttf': 'font/ttf',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; font-src 'self' data:; " +
  "img-src 'self' data:; connect-src 'self'; worker-src 'self'";

const b64url = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

function send(res, status, body, type = 'application/json') {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body));
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null');
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://localhost');
  const path = url.pathname;

  if (path === '/dev/users' && req.method === 'GET' && devSignIn) return send(res, 200, USERS);

  if (path === '/dev/token' && req.method === 'POST' && devSignIn) {
    let body;
    try {
      body = await readJson(req);
    } catch {
      return send(res, 400, { error: 'the body is not JSON' });
    }
    const user = USERS.find((u) => u.id === body?.user);
    if (!user) return send(res, 400, { error: `unknown user ${JSON.stringify(body?.user)}` });
    const now = Math.floor(Date.now() / 1000);
    const jwt = [
      b64url({ alg: 'none', typ: 'JWT' }),
      b64url({ sub: user.id, role: user.role, iat: now, exp: now + 3600 }),
      'fake-signature',
    ].join('.');
    return send(res, 200, { access_token: jwt, token_type: 'Bearer', expires_in: 3600 });
  }

  if (path === '/playground') {
    res.writeHead(308, { location: '/playground/' });
    return res.end();
  }

  if (path === '/playground/operations.json' && operations) return send(res, 200, OPERATIONS);

  if (path.startsWith('/playground/') && req.method === 'GET') {
    const rel = decodeURIComponent(path.slice('/playground/'.length)) || 'index.html';
    const file = normalize(join(dist, rel));
    if (file.startsWith(dist.endsWith(sep) ? dist : dist + sep)) {
      try {
        const data = await readFile(file);
        res.writeHead(200, {
          'content-type': TYPES[extname(file)] || 'application/octet-stream',
          'content-security-policy': CSP,
          'cache-control': rel.startsWith('assets/') ? 'public, max-age=31536000, immutable' : 'no-cache',
        });
        return res.end(data);
      } catch {
        // Fall through to 404.
      }
    }
  }

  send(res, 404, { error: 'not found' });
}

createServer((req, res) => {
  handle(req, res).catch((error) => {
    console.error(error);
    if (!res.headersSent) send(res, 500, { error: 'internal error' });
    else res.end();
  });
}).listen(port, '127.0.0.1', () => {
  console.log(`playground on http://127.0.0.1:${port}/playground/` +
    `${devSignIn ? '' : ' (no dev sign-in)'}${operations ? '' : ' (no operations.json)'}`);
});
