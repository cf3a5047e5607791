package stsclient_test

// The behaviour of stsclient against real STS servers, which test/clients.test.ts starts (the same rules the
// TypeScript client's tests check, row by row of the README's client table). It passes the servers in
// STSCLIENT_TEST_* variables; run it with `npx vitest run test/clients.test.ts`.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sts-project/sts/clients/go/stsclient"
	stsv1 "github.com/sts-project/sts/clients/go/stsv1"
)

const minute = time.Minute

// env is what the harness passes.
var env struct {
	// A server on a manual clock that the control URL advances; application token lifetime 1 min, absolute
	// lifetime 2.2 min; application "shop" with Secret, user "alice" with Password.
	ClockAddress, ClockSecret, Control string
	// A server on real time with strict logon throttling (2 failures); trusted application "shop" with
	// Secret, users "alice" and "mallory-go"; "other" is an application id with no application.
	Address, Secret, Password, Issuer string
	// A TLS server whose certificate CAFile signed.
	TLSAddress, CAFile string
	// An address where nothing listens.
	Unused string
}

func TestMain(m *testing.M) {
	get := func(name string) string {
		v := os.Getenv("STSCLIENT_TEST_" + name)
		if v == "" {
			fmt.Fprintf(os.Stderr, "stsclient tests need real STS servers (STSCLIENT_TEST_%s is not set): run `npx vitest run test/clients.test.ts` from the repository root\n", name)
			os.Exit(2)
		}
		return v
	}
	env.ClockAddress, env.ClockSecret, env.Control = get("CLOCK_ADDRESS"), get("CLOCK_SECRET"), get("CONTROL")
	env.Address, env.Secret, env.Password, env.Issuer = get("ADDRESS"), get("SECRET"), get("PASSWORD"), get("ISSUER")
	env.TLSAddress, env.CAFile, env.Unused = get("TLS_ADDRESS"), get("CA_FILE"), get("UNUSED_ADDRESS")
	os.Exit(m.Run())
}

func newClient(t *testing.T, address string, opts ...stsclient.Option) *stsclient.Client {
	t.Helper()
	c, err := stsclient.New(address, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// cur is the running test, for must and failure (which take a call's two results, so no *testing.T).
// Tests here do not run in parallel.
var cur *testing.T

func use(t *testing.T) { cur = t }

func must[T any](v T, err error) T {
	cur.Helper()
	if err != nil {
		cur.Fatalf("unexpected error: %v", err)
	}
	return v
}

// failure asserts err is an *stsclient.Error and returns it.
func failure(_ any, err error) *stsclient.Error {
	cur.Helper()
	if err == nil {
		cur.Fatal("expected the call to fail, but it succeeded")
	}
	e, ok := stsclient.AsError(err)
	if !ok {
		cur.Fatalf("not an *stsclient.Error: %T %v", err, err)
	}
	return e
}

func equal[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// recorder collects the client's events.
type recorder struct {
	mu     sync.Mutex
	events []stsclient.Event
}

func (r *recorder) on(e stsclient.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) count(typ stsclient.EventType) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Type == typ {
			n++
		}
	}
	return n
}

func (r *recorder) last(typ stsclient.EventType) stsclient.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.events) - 1; i >= 0; i-- {
		if r.events[i].Type == typ {
			return r.events[i]
		}
	}
	return stsclient.Event{}
}

// manualScheduler runs timers only when the test fires them.
type manualScheduler struct {
	mu     sync.Mutex
	next   int
	timers map[int]pending
}

type pending struct {
	d time.Duration
	f func()
}

func (s *manualScheduler) AfterFunc(d time.Duration, f func()) func() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timers == nil {
		s.timers = map[int]pending{}
	}
	s.next++
	id := s.next
	s.timers[id] = pending{d, f}
	return func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		_, ok := s.timers[id]
		delete(s.timers, id)
		return ok
	}
}

func (s *manualScheduler) pending() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Duration
	for _, p := range s.timers {
		out = append(out, p.d)
	}
	return out
}

// fire runs the one pending timer (its renewal or logon completes before fire returns).
func (s *manualScheduler) fire(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	if len(s.timers) != 1 {
		s.mu.Unlock()
		t.Fatalf("want exactly one pending timer, have %d", len(s.timers))
	}
	var f func()
	for id, p := range s.timers {
		f = p.f
		delete(s.timers, id)
	}
	s.mu.Unlock()
	f()
}

// clocks moves the client's manual clock and the server's together; it returns the server's time.
type clocks struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clocks) client() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clocks) advance(t *testing.T, d time.Duration) time.Time {
	t.Helper()
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	return control(t, fmt.Sprintf("/advance?ms=%d", d.Milliseconds()))
}

func control(t *testing.T, path string) time.Time {
	t.Helper()
	res, err := http.Post(env.Control+path, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var out struct{ Now int64 }
	if res.StatusCode != 200 || json.Unmarshal(body, &out) != nil {
		t.Fatalf("control %s: %d %s", path, res.StatusCode, body)
	}
	return time.UnixMilli(out.Now)
}

func logonUser(ctx context.Context, c *stsclient.Client, username, password string) (*stsv1.LogonUserResponse, error) {
	// ticket_application_id is left out: the zero value is "no ticket".
	return c.Session.LogonUser(ctx, &stsv1.LogonUserRequest{
		Credential: &stsv1.LogonUserRequest_UserCredential{UserCredential: &stsv1.UserCredential{Username: username, Password: password}},
	})
}

func appInfo(t *testing.T, c *stsclient.Client) string {
	t.Helper()
	return must(c.Session.GetApplicationInfo(context.Background(), &stsv1.GetApplicationInfoRequest{})).GetApplication().GetApplicationId()
}

func TestLogonAtFirstUseAndUserSession(t *testing.T) {
	use(t)
	ctx := context.Background()
	ev := &recorder{}
	c := newClient(t, env.Address, stsclient.WithInsecure(), stsclient.WithCredentials("shop", env.Secret), stsclient.WithEventHandler(ev.on))
	equal(t, "events before the first call", len(ev.events), 0)
	var wg sync.WaitGroup
	ids := make([]string, 4)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.Session.GetApplicationInfo(ctx, &stsv1.GetApplicationInfoRequest{})
			if err == nil {
				ids[i] = res.GetApplication().GetApplicationId()
			}
		}()
	}
	wg.Wait()
	equal(t, "application ids", strings.Join(ids, ","), "shop,shop,shop,shop")
	equal(t, "logons for concurrent calls", ev.count(stsclient.EventLogon), 1)

	user := must(logonUser(ctx, c, "alice", env.Password))
	equal(t, "user's application", user.GetUserToken().GetApplicationId(), "shop")
	byID := must(c.Session.ValidateUserToken(ctx, &stsv1.ValidateUserTokenRequest{Token: &stsv1.ValidateUserTokenRequest_UserTokenId{UserTokenId: user.GetUserToken().GetUserTokenId()}}))
	equal(t, "active by id", byID.GetActive(), true)
	byJwt := must(c.Session.ValidateUserToken(ctx, &stsv1.ValidateUserTokenRequest{Token: &stsv1.ValidateUserTokenRequest_UserTokenJwt{UserTokenJwt: user.GetUserTokenJwt()}}))
	equal(t, "active by JWT", byJwt.GetActive(), true)

	token := must(c.ApplicationToken(ctx))
	v := must(c.Session.ValidateApplicationToken(ctx, &stsv1.ValidateApplicationTokenRequest{ApplicationTokenId: token}))
	equal(t, "application token's owner", v.GetApplicationToken().GetApplicationId(), "shop")
	equal(t, "logons", ev.count(stsclient.EventLogon), 1)

	must(c.Session.ReleaseUserToken(ctx, &stsv1.ReleaseUserTokenRequest{UserTokenId: user.GetUserToken().GetUserTokenId()}))
	after := must(c.Session.ValidateUserToken(ctx, &stsv1.ValidateUserTokenRequest{Token: &stsv1.ValidateUserTokenRequest_UserTokenId{UserTokenId: user.GetUserToken().GetUserTokenId()}}))
	equal(t, "active after logout", after.GetActive(), false)
}

func TestRenewalAt80PercentAndLogonWhenRefused(t *testing.T) {
	use(t)
	ctx := context.Background()
	clk := &clocks{now: time.Unix(1_000_000, 0)}
	sched := &manualScheduler{}
	ev := &recorder{}
	c := newClient(t, env.ClockAddress, stsclient.WithInsecure(), stsclient.WithCredentials("shop", env.ClockSecret),
		stsclient.WithClock(clk.client), stsclient.WithScheduler(sched), stsclient.WithEventHandler(ev.on))

	first := must(c.ApplicationToken(ctx))
	equal(t, "logon expiry", ev.last(stsclient.EventLogon).ExpiresAt, clk.client().Add(minute))
	equal(t, "renewal timer", fmt.Sprint(sched.pending()), fmt.Sprint([]time.Duration{48 * time.Second}))

	// At 80% the timer renews the same token: STS keeps it a full lifetime from then.
	serverNow := clk.advance(t, 48*time.Second)
	sched.fire(t)
	equal(t, "renewals", ev.count(stsclient.EventRenewed), 1)
	equal(t, "renewed expiry", ev.last(stsclient.EventRenewed).ExpiresAt, clk.client().Add(minute))
	equal(t, "next renewal", fmt.Sprint(sched.pending()), fmt.Sprint([]time.Duration{48 * time.Second}))
	v := must(c.Session.ValidateApplicationToken(ctx, &stsv1.ValidateApplicationTokenRequest{ApplicationTokenId: first}))
	equal(t, "server expiry", v.GetApplicationToken().GetExpireTime().AsTime().UnixMilli(), serverNow.Add(minute).UnixMilli())

	// Past the original expiry the token still works, and it is still the first one.
	clk.advance(t, 30*time.Second)
	equal(t, "application", appInfo(t, c), "shop")
	equal(t, "token after renewal", must(c.ApplicationToken(ctx)), first)
	equal(t, "logons", ev.count(stsclient.EventLogon), 1)

	// The token ends behind the client's back: the renewal is refused and the client logs on again.
	must(c.Session.ReleaseApplicationToken(ctx, &stsv1.ReleaseApplicationTokenRequest{ApplicationTokenId: first}))
	sched.fire(t)
	failed := ev.last(stsclient.EventRenewalFailed)
	if failed.Err == nil || failed.Err.Code != codes.Unauthenticated || failed.Err.StsCode != "unauthenticated" {
		t.Fatalf("renewal failure: %+v", failed.Err)
	}
	second := must(c.ApplicationToken(ctx))
	if second == first {
		t.Fatal("no new token after the refused renewal")
	}
	equal(t, "logons", ev.count(stsclient.EventLogon), 2)
	equal(t, "renewal timer", fmt.Sprint(sched.pending()), fmt.Sprint([]time.Duration{48 * time.Second}))

	// A call refused because the token ended is sent once more after a new logon.
	must(c.Session.ReleaseApplicationToken(ctx, &stsv1.ReleaseApplicationTokenRequest{ApplicationTokenId: second}))
	equal(t, "application", appInfo(t, c), "shop")
	equal(t, "logons", ev.count(stsclient.EventLogon), 3)

	// A token whose local lifetime ran out (the timer never fired) is not used: the next call logs on first.
	clk.advance(t, 2*minute)
	equal(t, "application", appInfo(t, c), "shop")
	equal(t, "logons", ev.count(stsclient.EventLogon), 4)
	equal(t, "renewal failures", ev.count(stsclient.EventRenewalFailed), 1)
}

func TestRenewalStopsAtAbsoluteLifetime(t *testing.T) {
	use(t)
	ctx := context.Background()
	clk := &clocks{now: time.Unix(5_000_000, 0)}
	sched := &manualScheduler{}
	ev := &recorder{}
	c := newClient(t, env.ClockAddress, stsclient.WithInsecure(), stsclient.WithCredentials("shop", env.ClockSecret),
		stsclient.WithClock(clk.client), stsclient.WithScheduler(sched), stsclient.WithEventHandler(ev.on))

	first := must(c.ApplicationToken(ctx))
	clk.advance(t, 48*time.Second)
	sched.fire(t)
	equal(t, "first renewal expiry", ev.last(stsclient.EventRenewed).ExpiresAt, clk.client().Add(minute))
	// 1.6 min after logon STS renews only up to 2.2 min, and the client believes it.
	clk.advance(t, 48*time.Second)
	sched.fire(t)
	equal(t, "second renewal expiry", ev.last(stsclient.EventRenewed).ExpiresAt, clk.client().Add(36*time.Second))
	equal(t, "timer at 80% of what is left", fmt.Sprint(sched.pending()), fmt.Sprint([]time.Duration{28800 * time.Millisecond}))
	// Then a new logon instead of a renewal that would gain nothing.
	clk.advance(t, 28800*time.Millisecond)
	sched.fire(t)
	second := must(c.ApplicationToken(ctx))
	if second == first {
		t.Fatal("no new logon at the absolute lifetime")
	}
	equal(t, "logons", ev.count(stsclient.EventLogon), 2)
	equal(t, "renewals", ev.count(stsclient.EventRenewed), 2)
	equal(t, "renewal failures", ev.count(stsclient.EventRenewalFailed), 0)
	// The first token was still valid when it was replaced; it ends at the cap.
	active := func(id string) bool {
		return must(c.Session.ValidateApplicationToken(ctx, &stsv1.ValidateApplicationTokenRequest{ApplicationTokenId: id})).GetActive()
	}
	equal(t, "first token before the cap", active(first), true)
	clk.advance(t, 7200*time.Millisecond)
	equal(t, "first token at the cap", active(first), false)
	equal(t, "application", appInfo(t, c), "shop")
}

func TestKeysEncryptAndVerifyOffline(t *testing.T) {
	use(t)
	ctx := context.Background()
	c := newClient(t, env.Address, stsclient.WithInsecure(), stsclient.WithCredentials("shop", env.Secret))
	jwe := must(c.Keys.EncryptFor(ctx, []byte("for STS only"), "text/plain"))
	equal(t, "JWE parts", len(strings.Split(jwe, ".")), 5)
	dec := must(c.Pop.Decrypt(ctx, &stsv1.DecryptRequest{Jwe: jwe}))
	equal(t, "decrypted", string(dec.GetPlaintext())+"|"+dec.GetContentType(), "for STS only|text/plain")

	user := must(logonUser(ctx, c, "alice", env.Password))
	// The JWKS is fetched once, then verification is offline.
	fetches := 0
	var later time.Duration // added to the cache's clock
	keys := stsclient.NewJwksCache(func(ctx context.Context) (*stsclient.JwksDocument, error) {
		fetches++
		res, err := c.Pop.GetJwks(ctx, &stsv1.GetJwksRequest{})
		if err != nil {
			return nil, err
		}
		return &stsclient.JwksDocument{JwksJSON: res.GetJwksJson(), MaxAge: res.GetMaxAge().AsDuration(), PrimaryEncryptionKid: res.GetPrimaryEncryptionKid(), PrimarySigningKid: res.GetPrimarySigningKid()}, nil
	}, stsclient.JwksCacheOptions{Now: func() time.Time { return time.Now().Add(later) }})
	for range 3 {
		claims := must(keys.VerifyUserToken(ctx, user.GetUserTokenJwt(), env.Issuer, "shop"))
		equal(t, "sub", claims["sub"], any(user.GetUserToken().GetUid()))
	}
	equal(t, "JWKS fetches", fetches, 1)
	if _, err := keys.VerifyUserToken(ctx, user.GetUserTokenJwt(), env.Issuer, "another-app"); err == nil {
		t.Fatal("a token for another audience verified")
	}
	if _, err := keys.VerifyUserToken(ctx, user.GetUserTokenJwt(), "urn:another", "shop"); err == nil {
		t.Fatal("a token from another issuer verified")
	}
	later = 48 * time.Hour
	if _, err := keys.VerifyUserToken(ctx, user.GetUserTokenJwt(), env.Issuer, "shop"); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("an expired token: %v", err)
	}
	later = 0
	parts := strings.Split(user.GetUserTokenJwt(), ".")
	flip := "A"
	if strings.HasPrefix(parts[2], "A") {
		flip = "B"
	}
	if _, _, err := c.Keys.VerifyToken(ctx, parts[0]+"."+parts[1]+"."+flip+parts[2][1:]); err == nil {
		t.Fatal("a tampered JWT verified")
	}
	// A JWS the application had STS sign (PopService.Sign) is no user token.
	signed := must(c.Pop.Sign(ctx, &stsv1.SignRequest{Payload: []byte(`{"sub":"x"}`)}))
	if _, _, err := c.Keys.VerifyToken(ctx, signed.GetJws()); err != nil {
		t.Fatalf("STS's own signature did not verify: %v", err)
	}
	if _, err := c.Keys.VerifyUserToken(ctx, signed.GetJws(), env.Issuer, "shop"); err == nil {
		t.Fatal("a PopService.Sign JWS verified as a user token")
	}
}

func TestCredentialJweIsSingleUse(t *testing.T) {
	use(t)
	ctx := context.Background()
	c := newClient(t, env.Address, stsclient.WithInsecure(), stsclient.WithCredentials("shop", env.Secret))
	jwe := must(c.Keys.EncryptCredential(ctx, stsclient.UserCredential{Username: "alice", Password: env.Password}, stsclient.CredentialOptions{Audience: "shop"}))
	logonWith := func(jwe string) (*stsv1.LogonUserResponse, error) {
		return c.Session.LogonUser(ctx, &stsv1.LogonUserRequest{Credential: &stsv1.LogonUserRequest_UserCredentialJwe{UserCredentialJwe: jwe}})
	}
	equal(t, "user", must(logonWith(jwe)).GetUserToken().GetUsername(), "alice")
	replay := failure(logonWith(jwe))
	equal(t, "replay", fmt.Sprint(replay.Code, replay.StsCode, replay.Details), fmt.Sprint(codes.Unauthenticated, "invalid_credentials", "invalid user credentials"))
	appJwe := must(c.Keys.EncryptCredential(ctx, stsclient.ApplicationCredential{ApplicationID: "shop", ApplicationSecret: env.Secret}, stsclient.CredentialOptions{}))
	app := must(c.Session.LogonApplication(ctx, &stsv1.LogonApplicationRequest{Credential: &stsv1.LogonApplicationRequest_ApplicationCredentialJwe{ApplicationCredentialJwe: appJwe}}))
	equal(t, "application", app.GetApplicationToken().GetApplicationId(), "shop")
	if _, err := c.Keys.EncryptCredential(ctx, stsclient.StepUpCredential{Password: env.Password}, stsclient.CredentialOptions{}); err == nil {
		t.Fatal("a user credential without audience was encrypted")
	}
}

func TestRetriesOnlyIdempotentReads(t *testing.T) {
	use(t)
	ctx := context.Background()
	ev := &recorder{}
	c := newClient(t, env.Unused, stsclient.WithInsecure(), stsclient.WithCredentials("shop", "secret"), stsclient.WithRetries(2),
		stsclient.WithRetryBackoff(20*time.Millisecond, 40*time.Millisecond), stsclient.WithEventHandler(ev.on))
	e := failure(c.Pop.ListKeys(ctx, &stsv1.ListKeysRequest{}))
	equal(t, "read", fmt.Sprint(e.Code, e.StsCode), fmt.Sprint(codes.Unavailable, "unavailable"))
	equal(t, "retries of the read", ev.count(stsclient.EventRetry), 2)
	equal(t, "last attempt", ev.last(stsclient.EventRetry).Attempt, 2)
	// A write (and the logon it needs first) is never retried.
	w := failure(c.Session.LogonUser(ctx, &stsv1.LogonUserRequest{}))
	equal(t, "write", fmt.Sprint(w.Code, w.Method), fmt.Sprint(codes.Unavailable, "/sts.v1.SessionService/LogonApplication"))
	d := failure(c.Pop.Decrypt(ctx, &stsv1.DecryptRequest{Jwe: "a.b.c.d.e"}))
	equal(t, "decrypt", d.Code, codes.Unavailable)
	equal(t, "retries after the writes", ev.count(stsclient.EventRetry), 2)

	var methods []string
	for m := range stsclient.IdempotentMethods {
		methods = append(methods, m)
	}
	slices.Sort(methods)
	equal(t, "idempotent methods", strings.Join(methods, " "), strings.Join([]string{
		"/sts.v1.PopService/GetJwks", "/sts.v1.PopService/ListKeys", "/sts.v1.PopService/Verify",
		"/sts.v1.SessionService/GetApplicationInfo", "/sts.v1.SessionService/GetUserTokenByUserTokenId",
		"/sts.v1.SessionService/ValidateApplicationToken", "/sts.v1.SessionService/ValidateUserToken",
	}, " "))
}

func TestErrorCarriesCodeStsCodeAndRetryAfter(t *testing.T) {
	use(t)
	ctx := context.Background()
	c := newClient(t, env.Address, stsclient.WithInsecure(), stsclient.WithCredentials("shop", env.Secret))
	wrong := failure(logonUser(ctx, c, "mallory-go", "wrong password"))
	equal(t, "wrong password", fmt.Sprint(wrong.Code, "|", wrong.StsCode, "|", wrong.Details, "|", wrong.Method),
		fmt.Sprint(codes.Unauthenticated, "|invalid_credentials|invalid user credentials|/sts.v1.SessionService/LogonUser"))
	equal(t, "no retry-after", wrong.HasRetryAfter, false)
	equal(t, "status.Code reads it", status.Code(wrong), codes.Unauthenticated)
	equal(t, "message", wrong.Error(), "/sts.v1.SessionService/LogonUser: UNAUTHENTICATED (invalid_credentials): invalid user credentials")
	failure(logonUser(ctx, c, "mallory-go", "wrong password"))
	throttled := failure(logonUser(ctx, c, "mallory-go", "wrong password"))
	equal(t, "throttled", fmt.Sprint(throttled.Code, throttled.StsCode), fmt.Sprint(codes.ResourceExhausted, "throttled"))
	if !throttled.HasRetryAfter || throttled.RetryAfterMs <= 0 {
		t.Fatalf("retry-after-ms: %v %d", throttled.HasRetryAfter, throttled.RetryAfterMs)
	}
	var asErr *stsclient.Error
	if !errors.As(fmt.Errorf("wrapped: %w", throttled), &asErr) {
		t.Fatal("errors.As does not find the *Error")
	}

	// Wrong application credentials surface from the first call that needs the token.
	bad := newClient(t, env.Address, stsclient.WithInsecure(), stsclient.WithCredentials("shop", "not-the-secret"))
	refused := failure(bad.Session.GetApplicationInfo(ctx, &stsv1.GetApplicationInfoRequest{}))
	equal(t, "bad secret", fmt.Sprint(refused.Code, refused.StsCode, refused.Method), fmt.Sprint(codes.Unauthenticated, "invalid_credentials", "/sts.v1.SessionService/LogonApplication"))
	// Without credentials no token is sent; WithBearer sends the one given.
	anon := newClient(t, env.Address, stsclient.WithInsecure())
	missing := failure(anon.Session.GetApplicationInfo(ctx, &stsv1.GetApplicationInfoRequest{}))
	equal(t, "no token", fmt.Sprint(missing.Code, missing.StsCode), fmt.Sprint(codes.Unauthenticated, "unauthenticated"))
	token := must(c.ApplicationToken(ctx))
	info := must(anon.Session.GetApplicationInfo(stsclient.WithBearer(ctx, token), &stsv1.GetApplicationInfoRequest{}))
	equal(t, "bearer", info.GetApplication().GetApplicationId(), "shop")
}

func TestDeadlineOnEveryCall(t *testing.T) {
	use(t)
	ctx := context.Background()
	c := newClient(t, env.Address, stsclient.WithInsecure(), stsclient.WithCredentials("shop", env.Secret))
	must(c.ApplicationToken(ctx))
	// A password logon takes the password hash's time: far more than 2 ms.
	short, cancel := context.WithTimeout(ctx, 2*time.Millisecond)
	defer cancel()
	perCall := failure(logonUser(short, c, "alice", env.Password))
	equal(t, "per call", fmt.Sprint(perCall.Code, perCall.StsCode), fmt.Sprint(codes.DeadlineExceeded, "deadline_exceeded"))

	hasty := newClient(t, env.Address, stsclient.WithInsecure(), stsclient.WithCredentials("shop", env.Secret), stsclient.WithDefaultDeadline(2*time.Millisecond))
	byDefault := failure(hasty.Session.GetApplicationInfo(ctx, &stsv1.GetApplicationInfoRequest{}))
	equal(t, "default", byDefault.Code, codes.DeadlineExceeded)
	roomy, cancel2 := context.WithTimeout(ctx, 10*time.Second)
	defer cancel2()
	equal(t, "with room", must(hasty.Session.GetApplicationInfo(roomy, &stsv1.GetApplicationInfoRequest{})).GetApplication().GetApplicationId(), "shop")
}

func TestTLSByDefault(t *testing.T) {
	use(t)
	ctx := context.Background()
	// The default is TLS: against a plaintext server it fails.
	plain := newClient(t, env.Address, stsclient.WithRetries(0))
	equal(t, "TLS to a plaintext server", failure(plain.Pop.GetJwks(ctx, &stsv1.GetJwksRequest{})).Code, codes.Unavailable)
	// With the CA that signed the server's certificate it connects.
	pem := must(os.ReadFile(env.CAFile))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	good := newClient(t, env.TLSAddress, stsclient.WithTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}), stsclient.WithRetries(0))
	if must(good.Pop.GetJwks(ctx, &stsv1.GetJwksRequest{})).GetPrimarySigningKid() == "" {
		t.Fatal("no signing kid")
	}
	// The system roots do not know that CA, and plaintext to a TLS server fails.
	roots := newClient(t, env.TLSAddress, stsclient.WithRetries(0))
	equal(t, "system roots", failure(roots.Pop.GetJwks(ctx, &stsv1.GetJwksRequest{})).Code, codes.Unavailable)
	insecure := newClient(t, env.TLSAddress, stsclient.WithInsecure(), stsclient.WithRetries(0))
	equal(t, "plaintext to TLS", failure(insecure.Pop.GetJwks(ctx, &stsv1.GetJwksRequest{})).Code, codes.Unavailable)
}

func TestCloseStopsTheTimer(t *testing.T) {
	use(t)
	ctx := context.Background()
	sched := &manualScheduler{}
	c, err := stsclient.New(env.Address, stsclient.WithInsecure(), stsclient.WithCredentials("shop", env.Secret), stsclient.WithScheduler(sched))
	if err != nil {
		t.Fatal(err)
	}
	must(c.ApplicationToken(ctx))
	equal(t, "timers", len(sched.pending()), 1)
	c.Close()
	equal(t, "timers after close", len(sched.pending()), 0)
	closed := failure(c.Pop.GetJwks(ctx, &stsv1.GetJwksRequest{}))
	equal(t, "after close", fmt.Sprint(closed.Code, closed.StsCode), fmt.Sprint(codes.Canceled, "cancelled"))
	equal(t, "close is idempotent", c.Close(), nil)
}
