-- Console logins through an OpenID provider: a session keeps the role its
-- claims mapped to (a token's session reads its role from the config).
ALTER TABLE console_sessions ADD COLUMN role text;

-- A login in flight: its state (the cookie holds it, this table its
-- SHA-256), nonce and PKCE verifier, used once, for ten minutes.
CREATE TABLE oidc_logins (
    state_sha256 bytea       PRIMARY KEY,
    nonce        text        NOT NULL,
    verifier     text        NOT NULL,
    next         text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
