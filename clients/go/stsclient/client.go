// Package stsclient is the helper layer of the STS Go client, beside the generated stubs (package stsv1).
// It behaves as the TypeScript client (createStsClient) and the Python client (sts_client) do:
//
//   - TLS with the system roots unless WithTLS gives a configuration or WithInsecure asks for plaintext;
//   - with WithCredentials, the application logs on (LogonApplication) at first use, and its token is renewed
//     (RenewApplicationToken) by a timer at 80% of its lifetime; a renewal answered UNAUTHENTICATED logs on
//     again, and so does the timer once STS renews the token by less than a lifetime (the token has reached
//     its absolute lifetime, session.applicationTokenMaxLifetimeMs);
//   - `authorization: Bearer <application token>` on every call but the anonymous ones (LogonApplication,
//     GetJwks); a call refused because the token is no longer valid (`sts-error-code: unauthenticated`) logs
//     on again and is sent once more, since the server did nothing with it;
//   - a deadline on every call: the context's, or the default (10 s), covering the call's retries;
//   - idempotent reads only (IdempotentMethods) are retried on UNAVAILABLE, with exponential backoff and
//     jitter (at least `retry-after-ms` when the server sent one);
//   - every failure is an *Error: gRPC code, `sts-error-code`, `retry-after-ms`, details and method;
//   - Keys, a JwksCache bound to GetJwks, for EncryptFor, EncryptCredential, VerifyToken and VerifyUserToken.
//
// The Client's Pop, Session and Secret are the generated stubs, sent through the Client:
//
//	c, err := stsclient.New("sts.example.org:50051", stsclient.WithCredentials("shop", secret))
//	defer c.Close()
//	res, err := c.Session.LogonUser(ctx, &stsv1.LogonUserRequest{...})
package stsclient

import (
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	stsv1 "github.com/sts-project/sts/clients/go/stsv1"
)

// IdempotentMethods are retried on UNAVAILABLE: they read, so sending them twice changes nothing.
var IdempotentMethods = map[string]bool{
	"/sts.v1.PopService/GetJwks":                       true,
	"/sts.v1.PopService/ListKeys":                      true,
	"/sts.v1.PopService/Verify":                        true,
	"/sts.v1.SessionService/ValidateUserToken":         true,
	"/sts.v1.SessionService/ValidateApplicationToken":  true,
	"/sts.v1.SessionService/GetUserTokenByUserTokenId": true,
	"/sts.v1.SessionService/GetApplicationInfo":        true,
}

const (
	logonApplicationMethod = "/sts.v1.SessionService/LogonApplication"
	renewApplicationMethod = "/sts.v1.SessionService/RenewApplicationToken"
	getJwksMethod          = "/sts.v1.PopService/GetJwks"
)

// anonymousMethods need no credential.
var anonymousMethods = map[string]bool{logonApplicationMethod: true, getJwksMethod: true}

// Scheduler runs the renewal timer. The default uses time.AfterFunc; tests pass one they fire themselves.
type Scheduler interface {
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realScheduler struct{}

func (realScheduler) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// EventType names what the client did on its own.
type EventType string

const (
	EventLogon         EventType = "logon"
	EventRenewed       EventType = "renewed"
	EventRenewalFailed EventType = "renewal-failed"
	EventRetry         EventType = "retry"
)

// Event is what the client did on its own, for logs and metrics (it never carries a token).
type Event struct {
	Type EventType
	// ApplicationID and ExpiresAt (client clock): logon, renewed, renewal-failed.
	ApplicationID string
	ExpiresAt     time.Time
	// Method, Attempt (1-based) and Delay: retry.
	Method  string
	Attempt int
	Delay   time.Duration
	// Err: renewal-failed and retry.
	Err *Error
}

type options struct {
	tlsConfig       *tls.Config
	insecure        bool
	appID, secret   string
	hasCredentials  bool
	defaultDeadline time.Duration
	retries         int
	initialBackoff  time.Duration
	maxBackoff      time.Duration
	renewAt         float64
	now             func() time.Time
	scheduler       Scheduler
	onEvent         func(Event)
	dialOptions     []grpc.DialOption
	jwksMinRefetch  time.Duration
}

// Option configures New.
type Option func(*options)

// WithTLS sets the TLS configuration (a CA pool in RootCAs, a client certificate for mTLS). Default: TLS 1.2+
// with the system roots.
func WithTLS(c *tls.Config) Option { return func(o *options) { o.tlsConfig = c } }

// WithInsecure connects in plaintext (development only).
func WithInsecure() Option { return func(o *options) { o.insecure = true } }

// WithCredentials gives the application's credentials. Without them calls carry no token unless the
// context carries one (WithBearer).
func WithCredentials(applicationID, applicationSecret string) Option {
	return func(o *options) { o.appID, o.secret, o.hasCredentials = applicationID, applicationSecret, true }
}

// WithDefaultDeadline sets the deadline of every call (retries included) whose context has none. Default 10 s.
func WithDefaultDeadline(d time.Duration) Option { return func(o *options) { o.defaultDeadline = d } }

// WithRetries sets how often an idempotent read is sent again after UNAVAILABLE. Default 3.
func WithRetries(n int) Option { return func(o *options) { o.retries = n } }

// WithRetryBackoff sets the backoff before retry n (0-based): min(max, initial * 2^n), half of it fixed,
// half random. Default 200 ms and 5 s.
func WithRetryBackoff(initial, max time.Duration) Option {
	return func(o *options) { o.initialBackoff, o.maxBackoff = initial, max }
}

// WithRenewAt sets when to renew the application token, as a fraction of its lifetime. Default 0.8.
func WithRenewAt(f float64) Option { return func(o *options) { o.renewAt = f } }

// WithClock sets the clock used for token expiry (tests pass a manual one). Default time.Now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithScheduler sets what runs the renewal timer (see Scheduler).
func WithScheduler(s Scheduler) Option { return func(o *options) { o.scheduler = s } }

// WithEventHandler is called for logons, renewals, failed renewals and retries.
func WithEventHandler(f func(Event)) Option { return func(o *options) { o.onEvent = f } }

// WithDialOptions adds grpc-go dial options (after the client's own, so they win).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// WithJwksMinRefetchInterval sets how often at most Keys refetches the JWKS on an unknown kid. Default 10 s.
func WithJwksMinRefetchInterval(d time.Duration) Option {
	return func(o *options) { o.jwksMinRefetch = d }
}

type bearerKey struct{}

// WithBearer makes calls with ctx send this credential (an application token or an admin key) instead of
// the client's application token.
func WithBearer(ctx context.Context, bearer string) context.Context {
	return context.WithValue(ctx, bearerKey{}, bearer)
}

// held is the application token the client holds.
type held struct {
	id string
	// expiresAt is the local time after which the token is no longer valid.
	expiresAt time.Time
	// lifetime as the server gave it (expire - issue), so clock skew to STS does not matter.
	lifetime time.Duration
	// offset is local time minus STS time, measured at logon (send time minus issue time: never more than the
	// true offset, so expiries converted with it err on the early side).
	offset time.Duration
	// renewable turns false once a renewal granted less than a lifetime: STS will not extend it further.
	renewable bool
}

type logonCall struct {
	done chan struct{}
	id   string
	err  error
}

// Client is one connection to STS with the three generated stubs behind the helper's behaviour. It
// implements grpc.ClientConnInterface, so any stsv1 stub made on it behaves the same.
type Client struct {
	Pop     stsv1.PopServiceClient
	Session stsv1.SessionServiceClient
	Secret  stsv1.SecretServiceClient
	// Keys holds STS's published keys (GetJwks): EncryptFor, EncryptCredential, VerifyToken, VerifyUserToken.
	Keys *JwksCache

	conn *grpc.ClientConn
	o    options

	mu        sync.Mutex
	held      *held
	inflight  *logonCall
	stopTimer func() bool
	closed    bool
}

// New connects to STS at address (host:port). The connection is made lazily, by the first call.
func New(address string, opts ...Option) (*Client, error) {
	o := options{
		defaultDeadline: 10 * time.Second,
		retries:         3,
		initialBackoff:  200 * time.Millisecond,
		maxBackoff:      5 * time.Second,
		renewAt:         0.8,
		now:             time.Now,
		scheduler:       realScheduler{},
		jwksMinRefetch:  10 * time.Second,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if !(o.renewAt > 0 && o.renewAt < 1) {
		return nil, errors.New("stsclient: renewAt must be between 0 and 1")
	}
	var creds credentials.TransportCredentials
	switch {
	case o.insecure:
		creds = insecure.NewCredentials()
	case o.tlsConfig != nil:
		creds = credentials.NewTLS(o.tlsConfig)
	default:
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	// Reconnect soon after a restart, so read retries find the server again.
	bc := backoff.DefaultConfig
	bc.BaseDelay, bc.MaxDelay = 250*time.Millisecond, 10*time.Second
	dial := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: 5 * time.Second}),
	}, o.dialOptions...)
	conn, err := grpc.NewClient(address, dial...)
	if err != nil {
		return nil, err
	}
	c := &Client{conn: conn, o: o}
	c.Pop = stsv1.NewPopServiceClient(c)
	c.Session = stsv1.NewSessionServiceClient(c)
	c.Secret = stsv1.NewSecretServiceClient(c)
	c.Keys = NewJwksCache(func(ctx context.Context) (*JwksDocument, error) {
		res, err := c.Pop.GetJwks(ctx, &stsv1.GetJwksRequest{})
		if err != nil {
			return nil, err
		}
		return &JwksDocument{
			JwksJSON:             res.GetJwksJson(),
			MaxAge:               res.GetMaxAge().AsDuration(),
			PrimaryEncryptionKid: res.GetPrimaryEncryptionKid(),
			PrimarySigningKid:    res.GetPrimarySigningKid(),
		}, nil
	}, JwksCacheOptions{Now: o.now, MinRefetchInterval: o.jwksMinRefetch})
	return c, nil
}

// Close stops the renewal timer and closes the connection; later calls fail with CANCELLED. Idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	if c.stopTimer != nil {
		c.stopTimer()
		c.stopTimer = nil
	}
	c.mu.Unlock()
	return c.conn.Close()
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *Client) emit(e Event) {
	if c.o.onEvent == nil {
		return
	}
	defer func() { _ = recover() }() // a listener's failure is not the client's
	c.o.onEvent(e)
}

// ApplicationToken returns the current application token id, logging on first if needed.
func (c *Client) ApplicationToken(ctx context.Context) (string, error) {
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	return c.token(ctx)
}

func (c *Client) withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.o.defaultDeadline)
}

func (c *Client) token(ctx context.Context) (string, error) {
	c.mu.Lock()
	if h := c.held; h != nil && c.o.now().Before(h.expiresAt) {
		c.mu.Unlock()
		return h.id, nil
	}
	c.held = nil
	c.mu.Unlock()
	return c.logon(ctx)
}

// logon logs on, one logon at a time: concurrent callers share it (and the first caller's deadline).
func (c *Client) logon(ctx context.Context) (string, error) {
	if !c.o.hasCredentials {
		return "", errors.New("stsclient: no credentials given, so there is no application token")
	}
	c.mu.Lock()
	if call := c.inflight; call != nil {
		c.mu.Unlock()
		select {
		case <-call.done:
			return call.id, call.err
		case <-ctx.Done():
			return "", errorFrom(ctx.Err(), nil, logonApplicationMethod)
		}
	}
	call := &logonCall{done: make(chan struct{})}
	c.inflight = call
	c.mu.Unlock()

	call.id, call.err = c.doLogon(ctx)
	c.mu.Lock()
	c.inflight = nil
	c.mu.Unlock()
	close(call.done)
	return call.id, call.err
}

func (c *Client) doLogon(ctx context.Context) (string, error) {
	sentAt := c.o.now()
	res := &stsv1.LogonApplicationResponse{}
	var trailer metadata.MD
	err := c.conn.Invoke(ctx, logonApplicationMethod, &stsv1.LogonApplicationRequest{
		Credential: &stsv1.LogonApplicationRequest_ApplicationCredential{
			ApplicationCredential: &stsv1.ApplicationCredential{ApplicationId: c.o.appID, ApplicationSecret: c.o.secret},
		},
	}, res, grpc.Trailer(&trailer))
	if err != nil {
		return "", errorFrom(err, trailer, logonApplicationMethod)
	}
	t := res.GetApplicationToken()
	if t.GetApplicationTokenId() == "" {
		return "", newError(codes.Internal, "LogonApplication returned no token", logonApplicationMethod)
	}
	var lifetime, offset time.Duration
	if t.GetExpireTime() != nil && t.GetIssueTime() != nil {
		lifetime = max(0, t.GetExpireTime().AsTime().Sub(t.GetIssueTime().AsTime()))
	}
	if t.GetIssueTime() != nil {
		offset = sentAt.Sub(t.GetIssueTime().AsTime())
	}
	h := &held{id: t.GetApplicationTokenId(), expiresAt: sentAt.Add(lifetime), lifetime: lifetime, offset: offset, renewable: true}
	c.mu.Lock()
	c.held = h
	c.mu.Unlock()
	c.emit(Event{Type: EventLogon, ApplicationID: c.o.appID, ExpiresAt: h.expiresAt})
	if lifetime > 0 {
		c.schedule(sentAt.Add(time.Duration(c.o.renewAt * float64(lifetime))))
	}
	return h.id, nil
}

// schedule (re)arms the renewal timer for local time at.
func (c *Client) schedule(at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopTimer != nil {
		c.stopTimer()
		c.stopTimer = nil
	}
	if c.closed {
		return
	}
	c.stopTimer = c.o.scheduler.AfterFunc(max(0, at.Sub(c.o.now())), func() {
		c.mu.Lock()
		c.stopTimer = nil
		c.mu.Unlock()
		c.renew()
	})
}

// current returns the held token if it is still h (nil when closed or replaced).
func (c *Client) stillHeld(h *held) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && c.held == h
}

func (c *Client) renew() {
	c.mu.Lock()
	h := c.held
	closed := c.closed
	c.mu.Unlock()
	if closed || h == nil {
		return
	}
	if !h.renewable {
		// The token is at its absolute lifetime: a new logon replaces it before it ends. Until that succeeds the
		// current token stays in use; past its end, the next call logs on itself.
		ctx, cancel := context.WithTimeout(context.Background(), c.o.defaultDeadline)
		_, err := c.logon(ctx)
		cancel()
		if err != nil && c.stillHeld(h) {
			c.retryRenewalOrDrop(h, time.Second)
		}
		return
	}
	sentAt := c.o.now()
	ctx, cancel := context.WithTimeout(context.Background(), c.o.defaultDeadline)
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+h.id)
	res := &stsv1.RenewApplicationTokenResponse{}
	var trailer metadata.MD
	err := c.conn.Invoke(ctx, renewApplicationMethod, &stsv1.RenewApplicationTokenRequest{ApplicationTokenId: h.id}, res, grpc.Trailer(&trailer))
	cancel()
	if err == nil {
		if !c.stillHeld(h) {
			return // replaced meanwhile
		}
		// STS never renews past the token's absolute lifetime: trust the expiry it answered, not a lifetime.
		granted := h.lifetime
		if et := res.GetApplicationToken().GetExpireTime(); et != nil {
			granted = min(h.lifetime, et.AsTime().Add(h.offset).Sub(sentAt))
		}
		granted = max(0, granted)
		c.mu.Lock()
		h.expiresAt = sentAt.Add(granted)
		// Less than 90% of a lifetime (10% allows for the offset's error): renewing again would gain less each
		// time, so the timer logs on instead.
		h.renewable = float64(granted) >= 0.9*float64(h.lifetime)
		expiresAt := h.expiresAt
		c.mu.Unlock()
		c.emit(Event{Type: EventRenewed, ApplicationID: c.o.appID, ExpiresAt: expiresAt})
		c.schedule(sentAt.Add(time.Duration(c.o.renewAt * float64(granted))))
		return
	}
	e := errorFrom(err, trailer, renewApplicationMethod)
	c.emit(Event{Type: EventRenewalFailed, ApplicationID: c.o.appID, Err: e})
	if !c.stillHeld(h) {
		return
	}
	if e.Code == codes.Unauthenticated {
		// The token ended (released, expired while we slept, STS lost it): a new logon replaces it. On failure
		// the next call logs on again and reports it to its caller.
		c.mu.Lock()
		c.held = nil
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), c.o.defaultDeadline)
		_, _ = c.logon(ctx)
		cancel()
		return
	}
	// STS unreachable or busy: try again before the token runs out; past that, the next call logs on.
	c.retryRenewalOrDrop(h, max(time.Second, time.Duration(e.RetryAfterMs)*time.Millisecond))
}

// retryRenewalOrDrop schedules another attempt in min(half of what is left, wait), or forgets the token when
// nothing is left.
func (c *Client) retryRenewalOrDrop(h *held, wait time.Duration) {
	left := h.expiresAt.Sub(c.o.now())
	if left <= 0 {
		c.mu.Lock()
		if c.held == h {
			c.held = nil
		}
		c.mu.Unlock()
		return
	}
	c.schedule(c.o.now().Add(min(left/2, wait)))
}

// Invoke sends a unary call with the client's behaviour (grpc.ClientConnInterface).
func (c *Client) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if c.isClosed() {
		return newError(codes.Canceled, "the client is closed", method)
	}
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	retryable := IdempotentMethods[method]
	explicit, hasExplicit := ctx.Value(bearerKey{}).(string)
	managed := !hasExplicit && c.o.hasCredentials && !anonymousMethods[method]
	reauthenticated := false
	// An attempt includes the logon it may need, so a read retried on UNAVAILABLE also retries that logon.
	for attempt := 0; ; attempt++ {
		used := ""
		e := func() *Error {
			callCtx := ctx
			bearer := explicit
			if managed {
				id, err := c.token(ctx)
				if err != nil {
					if se, ok := AsError(err); ok {
						return se
					}
					return newError(codes.Unauthenticated, err.Error(), method)
				}
				bearer, used = id, id
			}
			if bearer != "" {
				callCtx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bearer)
			}
			var trailer metadata.MD
			if err := c.conn.Invoke(callCtx, method, args, reply, append(opts, grpc.Trailer(&trailer))...); err != nil {
				return errorFrom(err, trailer, method)
			}
			return nil
		}()
		if e == nil {
			return nil
		}
		if c.isClosed() {
			return e
		}
		// Our token was refused as a credential: the server did nothing, so log on again and resend once.
		if managed && !reauthenticated && e.Code == codes.Unauthenticated && e.StsCode == "unauthenticated" && used != "" {
			reauthenticated = true
			c.mu.Lock()
			if c.held != nil && c.held.id == used {
				c.held = nil
			}
			c.mu.Unlock()
			attempt--
			continue
		}
		if !retryable || e.Code != codes.Unavailable || attempt >= c.o.retries {
			return e
		}
		ceiling := min(c.o.maxBackoff, c.o.initialBackoff<<attempt)
		if ceiling <= 0 { // shifted past the range of a Duration
			ceiling = c.o.maxBackoff
		}
		delay := max(ceiling/2+time.Duration(rand.Int64N(int64(ceiling/2)+1)), time.Duration(e.RetryAfterMs)*time.Millisecond)
		if deadline, ok := ctx.Deadline(); ok && time.Now().Add(delay).After(deadline) {
			return e
		}
		c.emit(Event{Type: EventRetry, Method: method, Attempt: attempt + 1, Delay: delay, Err: e})
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return e
		}
		if c.isClosed() {
			return e
		}
	}
}

// NewStream opens a stream with the client's credential and deadline rules (no retries). STS has no
// streaming RPC today; this completes grpc.ClientConnInterface.
func (c *Client) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if bearer, ok := ctx.Value(bearerKey{}).(string); ok {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bearer)
	} else if c.o.hasCredentials && !anonymousMethods[method] {
		id, err := c.token(ctx)
		if err != nil {
			return nil, err
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+id)
	}
	return c.conn.NewStream(ctx, desc, method, opts...)
}
