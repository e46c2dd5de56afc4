// An OpenID provider for hxjobs's tests: the npm `oidc-provider` package (a
// certified implementation) on loopback, with one client and accounts made
// up from the login name (any password): a name starting with "admin" is in
// the group hxjobs-admins, "op" in hxjobs-operators, "view" in
// hxjobs-viewers, anything else in none. scripts/services.sh oidc installs
// the package; a test starts this with
//   HXJOBS_OIDC_PORT, HXJOBS_OIDC_REDIRECT (the client's redirect URI),
//   HXJOBS_OIDC_SECRET (the client's secret), HXJOBS_OIDC_DIR (where
//   scripts/services.sh installed the package).
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const dir = process.env.HXJOBS_OIDC_DIR || join(process.env.HOME || '.', '.cache/hxjobs-oidc');
const { default: Provider } = await import(
  pathToFileURL(join(dir, 'node_modules/oidc-provider/lib/index.js')).href
);

const port = Number(process.env.HXJOBS_OIDC_PORT || 19300);
const issuer = `http://127.0.0.1:${port}`;

function groups(login) {
  if (login.startsWith('admin')) return ['hxjobs-admins'];
  if (login.startsWith('op')) return ['hxjobs-operators'];
  if (login.startsWith('view')) return ['hxjobs-viewers'];
  return [];
}

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'hxjobs',
    client_secret: process.env.HXJOBS_OIDC_SECRET || 'hxjobs-test-secret',
    redirect_uris: [process.env.HXJOBS_OIDC_REDIRECT],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
  scopes: ['openid', 'email', 'groups'],
  // The ID token carries the claims its scopes ask for.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@example.test`, email_verified: true, groups: groups(id) };
      },
    };
  },
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
