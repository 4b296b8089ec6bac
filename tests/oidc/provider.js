// A real OpenID provider for the bridge's tests: panva/node-oidc-provider (OpenID Certified),
// on 127.0.0.1, with its development login and consent forms, RP-initiated logout and
// back-channel logout. Started by tests/support_oidc.py; prints "ready <issuer>" when it listens.
import Provider from 'oidc-provider';

const port = Number(process.env.OP_PORT);
const bridge = process.env.BRIDGE_URL;
const issuer = `http://127.0.0.1:${port}`;

// The test setup makes the signing key (with joserfc) and hands it over as a private JWK.
const signingKey = JSON.parse(process.env.OP_SIGNING_JWK);

const groups = { alice: ['customers'], bob: ['staff'] };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'bridge',
      client_secret: process.env.OP_CLIENT_SECRET,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: [`${bridge}/callback`],
      post_logout_redirect_uris: [`${bridge}/`],
      backchannel_logout_uri: `${bridge}/backchannel-logout`,
      backchannel_logout_session_required: true,
    },
    {
      client_id: 'bridge-post',
      client_secret: process.env.OP_CLIENT_SECRET,
      token_endpoint_auth_method: 'client_secret_post',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: [`${bridge}/callback`],
      post_logout_redirect_uris: [`${bridge}/`],
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: ['test-only-cookie-key-0123456789abcdef'] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  conformIdTokenClaims: false, // put the scoped claims in the ID token too
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
    revocation: { enabled: true },
  },
  pkce: { required: () => true },
  // Short access tokens, so a test can move the bridge's clock past them and see a refresh.
  ttl: { AccessToken: 300, IdToken: 3600, RefreshToken: 86400, Grant: 86400, Session: 86400 },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: `${id}@example.com`,
          email_verified: true,
          name: id.charAt(0).toUpperCase() + id.slice(1),
          groups: groups[id] ?? [],
        };
      },
    };
  },
});
provider.proxy = false;
// Loopback over plain http is what these tests run on.
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('backchannel.error', (ctx, err) => console.error('backchannel.error', err.message));

provider.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
