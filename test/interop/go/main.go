// Command interop uses STS from standard Go JOSE libraries, through STS's HTTP endpoints only: the JWKS
// client of keyfunc (github.com/MicahParks/keyfunc/v3, on jwkset) fetches the keys from the jwks_uri named by
// STS's discovery document, golang-jwt (github.com/golang-jwt/jwt/v5) verifies user tokens with them, and
// go-jose (github.com/go-jose/go-jose/v4) encrypts to STS's POP key. test/interop.test.ts drives it.
//
// It reads one JSON request per line on stdin and writes one JSON answer per line on stdout:
//
//	{"op":"verify","token":"<JWT>","issuer":"...","audience":"..."} -> {"ok":true,"kid":"...","claims":{...}}
//	{"op":"encrypt","text":"..."}                                 -> {"ok":true,"kid":"...","jwe":"..."}
//
// A refusal is {"ok":false,"error":"..."}. The key cache is keyfunc's own, with its default refresh: on a
// token signed by an unknown kid it fetches the JWKS again (rate limited), as any service using it would.
//
// Environment: STS_DISCOVERY_URL, the URL of /.well-known/openid-configuration.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

// userTokenType is the "typ" of STS user tokens (RFC 8725 section 3.11): a JWS an application had STS sign
// through PopService.Sign never has it.
const userTokenType = "sts-user+jwt"

type request struct {
	Op       string `json:"op"`
	Token    string `json:"token"`
	Issuer   string `json:"issuer"`
	Audience string `json:"audience"`
	Text     string `json:"text"`
}

type answer struct {
	OK     bool           `json:"ok"`
	Error  string         `json:"error,omitempty"`
	Kid    string         `json:"kid,omitempty"`
	Claims map[string]any `json:"claims,omitempty"`
	JWE    string         `json:"jwe,omitempty"`
}

// discovery is the part of STS's discovery document a verifier needs.
type discovery struct {
	Issuer  string   `json:"issuer"`
	JwksURI string   `json:"jwks_uri"`
	Algs    []string `json:"id_token_signing_alg_values_supported"`
}

func fetchDiscovery(ctx context.Context, url string) (discovery, error) {
	var d discovery
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return d, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return d, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return d, fmt.Errorf("discovery: HTTP %d", res.StatusCode)
	}
	if err := json.NewDecoder(res.Body).Decode(&d); err != nil {
		return d, fmt.Errorf("discovery: %w", err)
	}
	if d.JwksURI == "" || len(d.Algs) == 0 {
		return d, errors.New("discovery: no jwks_uri or no signing algorithms")
	}
	return d, nil
}

// verify checks signature (with an algorithm STS publishes), typ, iss, aud and exp of a user token.
func verify(kf keyfunc.Keyfunc, algs []string, r request) answer {
	claims := jwt.MapClaims{}
	token, err := jwt.ParseWithClaims(r.Token, claims, kf.Keyfunc,
		jwt.WithValidMethods(algs), jwt.WithIssuer(r.Issuer), jwt.WithAudience(r.Audience),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(time.Minute))
	if err != nil {
		return answer{Error: err.Error()}
	}
	if typ, _ := token.Header["typ"].(string); typ != userTokenType {
		return answer{Error: fmt.Sprintf("typ %q is not %q", typ, userTokenType)}
	}
	kid, _ := token.Header["kid"].(string)
	return answer{OK: true, Kid: kid, Claims: claims}
}

// encrypt makes a compact JWE of the text to the first encryption key of the cached JWKS: STS lists its
// PRIMARY key first.
func encrypt(ctx context.Context, kf keyfunc.Keyfunc, r request) answer {
	keys, err := kf.Storage().KeyReadAll(ctx)
	if err != nil {
		return answer{Error: err.Error()}
	}
	for _, k := range keys {
		m := k.Marshal()
		if m.USE != jwkset.UseEnc {
			continue
		}
		recipient := jose.Recipient{Algorithm: jose.KeyAlgorithm(m.ALG.String()), Key: k.Key(), KeyID: m.KID}
		enc, err := jose.NewEncrypter(jose.A256GCM, recipient, (&jose.EncrypterOptions{}).WithContentType("text/plain"))
		if err != nil {
			return answer{Error: err.Error()}
		}
		obj, err := enc.Encrypt([]byte(r.Text))
		if err != nil {
			return answer{Error: err.Error()}
		}
		jwe, err := obj.CompactSerialize()
		if err != nil {
			return answer{Error: err.Error()}
		}
		return answer{OK: true, Kid: m.KID, JWE: jwe}
	}
	return answer{Error: "the JWKS has no encryption key"}
}

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := fetchDiscovery(ctx, os.Getenv("STS_DISCOVERY_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		os.Exit(1)
	}
	kf, err := keyfunc.NewDefaultCtx(ctx, []string{d.JwksURI})
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop: JWKS:", err)
		os.Exit(1)
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var r request
		var a answer
		if err := json.Unmarshal(in.Bytes(), &r); err != nil {
			a = answer{Error: err.Error()}
		} else {
			switch r.Op {
			case "verify":
				a = verify(kf, d.Algs, r)
			case "encrypt":
				a = encrypt(ctx, kf, r)
			default:
				a = answer{Error: "unknown op " + r.Op}
			}
		}
		if err := out.Encode(a); err != nil {
			os.Exit(1)
		}
	}
}
