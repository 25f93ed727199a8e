// A real OpenID Connect provider for the tests: panva's oidc-provider (OpenID Certified), from
// the npm registry, configured with one client and a few people. Its development login form
// (devInteractions) takes any password for a known login: the tests exercise Caisey's side of
// the protocol (discovery, authorization code with PKCE, token, userinfo), not passwords.
//
// node provider.mjs  (configuration in OIDC_CONFIG, JSON: port, client_id, client_secret,
// redirect_uris, accounts {login: claims})
import http from "node:http";
import Provider from "oidc-provider";

const config = JSON.parse(process.env.OIDC_CONFIG);
const issuer = `http://localhost:${config.port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: config.client_id,
      client_secret: config.client_secret,
      redirect_uris: config.redirect_uris,
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name", "preferred_username"],
    groups: ["groups"],
  },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ["caisey-test-provider-cookie-key"] },
  async findAccount(ctx, id) {
    const claims = config.accounts[id];
    if (!claims) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
});
// Loopback only, never another address.
http.createServer(provider.callback()).listen(config.port, "127.0.0.1", () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
