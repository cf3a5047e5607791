package stsclient

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// CredentialJweTyp is the protected-header type of a credential JWE (LogonApplication
// `application_credential_jwe`, LogonUser `user_credential_jwe`, TransformUserToken `step_up.password_jwe`).
// STS accepts no other JWE there.
const CredentialJweTyp = "sts-credential+jwe"

// UserTokenTyp is the protected-header type of the user token JWTs STS signs (RFC 8725 section 3.11).
const UserTokenTyp = "sts-user+jwt"

// defaultCredentialLifetime: STS accepts `exp` at most 5 minutes ahead (session.credentialJweMaxLifetimeMs).
const defaultCredentialLifetime = 2 * time.Minute

// JwksDocument is what a JWKS fetch returns (the GetJwksResponse fields the cache needs).
type JwksDocument struct {
	JwksJSON             string
	MaxAge               time.Duration
	PrimaryEncryptionKid string
	PrimarySigningKid    string
}

// JwksCacheOptions configures a JwksCache.
type JwksCacheOptions struct {
	// Now is the clock (tests pass a manual one). Default time.Now.
	Now func() time.Time
	// MinRefetchInterval: refetch on an unknown kid at most this often, so garbage kids cannot hammer STS.
	// Default 10 s.
	MinRefetchInterval time.Duration
}

// JwksCache holds STS's published keys: it honours the advertised lifetime (max_age) and refetches when it
// meets an unknown kid. Safe for concurrent use.
type JwksCache struct {
	fetch      func(context.Context) (*JwksDocument, error)
	now        func() time.Time
	minRefetch time.Duration

	mu         sync.Mutex
	keys       map[string]jose.JSONWebKey
	primaryEnc string
	expiresAt  time.Time
	lastFetch  time.Time
	fetched    bool
}

// NewJwksCache makes a cache around fetch (the Client binds it to GetJwks).
func NewJwksCache(fetch func(context.Context) (*JwksDocument, error), o JwksCacheOptions) *JwksCache {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MinRefetchInterval == 0 {
		o.MinRefetchInterval = 10 * time.Second
	}
	return &JwksCache{fetch: fetch, now: o.Now, minRefetch: o.MinRefetchInterval, keys: map[string]jose.JSONWebKey{}}
}

// Refresh fetches the JWKS now.
func (k *JwksCache) Refresh(ctx context.Context) error {
	doc, err := k.fetch(ctx)
	if err != nil {
		return err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(doc.JwksJSON), &set); err != nil {
		return errors.New("stsclient: the JWKS does not parse: " + err.Error())
	}
	keys := make(map[string]jose.JSONWebKey, len(set.Keys))
	for _, key := range set.Keys {
		if key.KeyID != "" {
			keys[key.KeyID] = key
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys = keys
	k.primaryEnc = doc.PrimaryEncryptionKid
	k.lastFetch = k.now()
	k.fetched = true
	k.expiresAt = k.lastFetch.Add(doc.MaxAge)
	return nil
}

func (k *JwksCache) fresh(ctx context.Context) error {
	k.mu.Lock()
	stale := !k.fetched || !k.now().Before(k.expiresAt)
	k.mu.Unlock()
	if stale {
		return k.Refresh(ctx)
	}
	return nil
}

// keyFor returns the key kid for the use ("enc" or "sig"), refetching once on an unknown kid.
func (k *JwksCache) keyFor(ctx context.Context, kid, use string) (*jose.JSONWebKey, error) {
	if err := k.fresh(ctx); err != nil {
		return nil, err
	}
	k.mu.Lock()
	key, ok := k.keys[kid]
	refetch := !ok && k.now().Sub(k.lastFetch) >= k.minRefetch
	k.mu.Unlock()
	if refetch {
		if err := k.Refresh(ctx); err != nil {
			return nil, err
		}
		k.mu.Lock()
		key, ok = k.keys[kid]
		k.mu.Unlock()
	}
	if !ok || key.Use != use || key.Algorithm == "" {
		return nil, nil
	}
	return &key, nil
}

// EncryptFor encrypts data to STS's PRIMARY encryption key as a compact JWE (enc A256GCM). Only STS can
// decrypt it, whatever proxies sit between. contentType ("" for none) goes to the `cty` header.
func (k *JwksCache) EncryptFor(ctx context.Context, data []byte, contentType string) (string, error) {
	opts := &jose.EncrypterOptions{}
	if contentType != "" {
		opts = opts.WithContentType(jose.ContentType(contentType))
	}
	return k.encrypt(ctx, data, opts)
}

// Credential is what a credential JWE carries: ApplicationCredential, UserCredential or StepUpCredential.
type Credential interface{ claims() map[string]any }

// ApplicationCredential is an application's id and secret (LogonApplication).
type ApplicationCredential struct{ ApplicationID, ApplicationSecret string }

// UserCredential is a user's username and password (LogonUser).
type UserCredential struct{ Username, Password string }

// StepUpCredential is a user's password as a step-up proof (TransformUserToken).
type StepUpCredential struct{ Password string }

func (c ApplicationCredential) claims() map[string]any {
	return map[string]any{"application_id": c.ApplicationID, "application_secret": c.ApplicationSecret}
}
func (c UserCredential) claims() map[string]any {
	return map[string]any{"username": c.Username, "password": c.Password}
}
func (c StepUpCredential) claims() map[string]any { return map[string]any{"password": c.Password} }

// CredentialOptions are the options of EncryptCredential.
type CredentialOptions struct {
	// Lifetime of the JWE (its `exp`). Default 2 minutes; STS accepts at most 5.
	Lifetime time.Duration
	// Audience is the id of the application that will present a user's credential (required for
	// UserCredential and StepUpCredential; STS checks it against the caller).
	Audience string
}

// EncryptCredential encrypts a credential for LogonApplication (`application_credential_jwe`), LogonUser
// (`user_credential_jwe`) or a step-up (`step_up.password_jwe`) as a credential JWE: typed
// `sts-credential+jwe`, with a fresh 256-bit `jti` and an `exp` Lifetime from now (RFC 7519 sections 4.1.7
// and 4.1.4). STS accepts each one once and only until it expires, so a copy of it is worth nothing: make a
// new one for every call.
func (k *JwksCache) EncryptCredential(ctx context.Context, credential Credential, o CredentialOptions) (string, error) {
	lifetime := o.Lifetime
	if lifetime == 0 {
		lifetime = defaultCredentialLifetime
	}
	if lifetime < 0 {
		return "", errors.New("stsclient: the credential lifetime must be positive")
	}
	claims := credential.claims()
	// A user's credential (LogonUser, step-up) is bound to the application that presents it (RFC 7519 4.1.3).
	if _, forApp := credential.(ApplicationCredential); !forApp && o.Audience == "" {
		return "", errors.New("stsclient: a user credential needs an Audience: the application id that will present it")
	}
	if o.Audience != "" {
		claims["aud"] = o.Audience
	}
	jti := make([]byte, 32)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	claims["jti"] = base64.RawURLEncoding.EncodeToString(jti)
	claims["exp"] = k.now().Add(lifetime).Unix()
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	return k.encrypt(ctx, payload, (&jose.EncrypterOptions{}).WithType(CredentialJweTyp))
}

func (k *JwksCache) encrypt(ctx context.Context, data []byte, opts *jose.EncrypterOptions) (string, error) {
	if err := k.fresh(ctx); err != nil {
		return "", err
	}
	k.mu.Lock()
	kid := k.primaryEnc
	k.mu.Unlock()
	key, err := k.keyFor(ctx, kid, "enc")
	if err != nil {
		return "", err
	}
	if key == nil {
		return "", errors.New("stsclient: STS publishes no primary encryption key")
	}
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.KeyAlgorithm(key.Algorithm), Key: key.Key, KeyID: key.KeyID}, opts)
	if err != nil {
		return "", err
	}
	obj, err := enc.Encrypt(data)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}

// VerifyToken verifies a compact JWS signed by STS and returns its payload and protected header. It fails
// when the signature is wrong or the key is not one STS publishes for signing.
func (k *JwksCache) VerifyToken(ctx context.Context, jws string) ([]byte, map[string]any, error) {
	headerB64, _, _ := strings.Cut(jws, ".")
	raw, err := base64.RawURLEncoding.DecodeString(headerB64)
	var header map[string]any
	if err != nil || json.Unmarshal(raw, &header) != nil {
		return nil, nil, errors.New("stsclient: not a compact JWS")
	}
	kid, _ := header["kid"].(string)
	var key *jose.JSONWebKey
	if kid != "" {
		if key, err = k.keyFor(ctx, kid, "sig"); err != nil {
			return nil, nil, err
		}
	}
	if key == nil {
		return nil, nil, errors.New("stsclient: signed with a key STS does not publish")
	}
	// The key pins the algorithm (RFC 8725 section 3.1).
	parsed, err := jose.ParseSigned(jws, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(key.Algorithm)})
	if err != nil {
		return nil, nil, errors.New("stsclient: invalid JWS: " + err.Error())
	}
	payload, err := parsed.Verify(key.Key)
	if err != nil {
		return nil, nil, errors.New("stsclient: invalid JWS signature")
	}
	return payload, header, nil
}

// VerifyUserToken verifies a user token JWT offline: STS's signature, the explicit type `sts-user+jwt` (a JWS
// an application had STS sign through PopService.Sign never has it), the issuer, the audience (your
// application id) and the expiry. It returns the claims. Offline verification cannot see a logout: use
// ValidateUserToken where that matters.
func (k *JwksCache) VerifyUserToken(ctx context.Context, jwt, issuer, audience string) (map[string]any, error) {
	payload, header, err := k.VerifyToken(ctx, jwt)
	if err != nil {
		return nil, err
	}
	if header["typ"] != UserTokenTyp {
		return nil, errors.New("stsclient: not an STS user token (typ)")
	}
	var claims map[string]any
	if json.Unmarshal(payload, &claims) != nil || claims == nil {
		return nil, errors.New("stsclient: not an STS user token (claims)")
	}
	if claims["iss"] != issuer {
		return nil, errors.New("stsclient: user token from another issuer")
	}
	if claims["aud"] != audience {
		return nil, errors.New("stsclient: user token for another application")
	}
	exp, ok := claims["exp"].(float64)
	if !ok || !k.now().Before(time.UnixMilli(int64(exp*1000))) {
		return nil, errors.New("stsclient: user token expired")
	}
	return claims, nil
}
