// The README's "Connect a Better Auth frontend" client code, run for real in Node against a
// running server.mjs: createAuthClient + jwtClient(), sign up / sign in, then
// `const { data } = await authClient.token()`. Prints one JSON line: {"token": ..., "error": ...}.
// Usage: node client_token.mjs <baseURL> <email> <password> <name>
// (better-auth/client is the framework-free build of better-auth/react: same proxy, same calls.)
import { createAuthClient } from "better-auth/client";
import { jwtClient } from "better-auth/client/plugins";

const [baseURL, email, password, name] = process.argv.slice(2);
if (!baseURL || !email || !password || !name) throw new Error("usage: client_token.mjs <baseURL> <email> <password> <name>");

// A browser keeps the session cookie and sends its Origin; Node's fetch does neither by itself.
const cookies = new Map();
async function browserLikeFetch(input, init = {}) {
  const headers = new Headers(init.headers);
  headers.set("origin", baseURL);
  if (cookies.size) headers.set("cookie", [...cookies].map(([k, v]) => `${k}=${v}`).join("; "));
  const response = await fetch(input, { ...init, headers });
  for (const line of response.headers.getSetCookie()) {
    const [pair] = line.split(";");
    const eq = pair.indexOf("=");
    cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
  }
  return response;
}

const authClient = createAuthClient({ baseURL, plugins: [jwtClient()], fetchOptions: { customFetchImpl: browserLikeFetch } });

const signUp = await authClient.signUp.email({ email, password, name });
if (signUp.error) throw new Error(`sign-up failed: ${JSON.stringify(signUp.error)}`);
const signIn = await authClient.signIn.email({ email, password });
if (signIn.error) throw new Error(`sign-in failed: ${JSON.stringify(signIn.error)}`);

// As in the README:
const { data, error } = await authClient.token(); // GET /api/auth/token -> { token }
console.log(JSON.stringify({ token: data?.token ?? null, error: error ?? null }));
