// Minimal real Better Auth server for the Python test-suite (see harness.py).
// Env: PORT (required), BASE_URL, BETTER_AUTH_SECRET, JWT_ALG = EdDSA | ES256 | RS256.
import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { jwt } from "better-auth/plugins/jwt";

const port = Number(process.env.PORT);
if (!Number.isInteger(port) || port <= 0) throw new Error("PORT env var is required");
const baseURL = process.env.BASE_URL || `http://127.0.0.1:${port}`;
const secret = process.env.BETTER_AUTH_SECRET || randomBytes(32).toString("hex");

// jwks.keyPairConfig is passed to jose's generateKeyPair (default: EdDSA / Ed25519).
const KEY_PAIR_CONFIGS = {
  EdDSA: { alg: "EdDSA", crv: "Ed25519" },
  ES256: { alg: "ES256" },
  RS256: { alg: "RS256", modulusLength: 2048 },
};
const alg = process.env.JWT_ALG || "EdDSA";
const keyPairConfig = KEY_PAIR_CONFIGS[alg];
if (!keyPairConfig) throw new Error(`JWT_ALG must be one of ${Object.keys(KEY_PAIR_CONFIGS)}`);

const db = { user: [], session: [], account: [], verification: [], jwks: [] };

const auth = betterAuth({
  baseURL,
  secret,
  database: memoryAdapter(db),
  emailAndPassword: { enabled: true },
  trustedOrigins: [baseURL],
  rateLimit: { enabled: false }, // tests sign up many users quickly
  telemetry: { enabled: false },
  plugins: [jwt({ jwks: { keyPairConfig } })],
});

const server = createServer(toNodeHandler(auth));
server.listen(port, "127.0.0.1", () => console.log(`READY ${baseURL}`));

for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
