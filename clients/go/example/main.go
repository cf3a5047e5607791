// Command example calls STS with the Go client (package stsclient over the generated stubs): the application
// logs on, a user logs on, the user's token is validated, handed over with a one-time ticket and logged out,
// and the JWKS is fetched; when given a subject token it also asks for the user's secret. It prints one JSON
// object with every result (protobuf JSON names, camelCase) on stdout.
//
//	go run ./example -address sts.example.org:50051 -ca-file ca.pem -app-id shop -app-secret ... \
//	    -username dave -password ...
//
// Every flag also has an environment variable: STSCLIENT_ADDRESS, STSCLIENT_APP_ID, STSCLIENT_APP_SECRET,
// STSCLIENT_USERNAME, STSCLIENT_PASSWORD, STSCLIENT_SUBJECT_TOKEN, STSCLIENT_CA_FILE and STSCLIENT_INSECURE
// (true: plaintext, for development). They are not STS_*: that namespace is the server's, which refuses
// variables it does not know. The connection uses TLS with the system roots unless -ca-file or -insecure
// says otherwise. A failing step prints the gRPC status and the STS error code (trailing metadata
// sts-error-code) on stderr and exits 1; the optional GetUserSecret step reports its failure in the JSON
// instead ("userSecret": {"error": ...}), since not every deployment serves it.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/sts-project/sts/clients/go/stsclient"
	stsv1 "github.com/sts-project/sts/clients/go/stsv1"
)

func env(name, fallback string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return fallback
}

// callError describes a failed call: gRPC status plus the STS error code from the trailing metadata.
type callError struct {
	Code         int    `json:"code"`
	CodeName     string `json:"codeName"`
	Message      string `json:"message"`
	StsErrorCode string `json:"stsErrorCode"`
	RetryAfterMs string `json:"retryAfterMs,omitempty"`
}

func describe(err error) callError {
	e, ok := stsclient.AsError(err)
	if !ok {
		return callError{Code: 2, CodeName: "Unknown", Message: err.Error()}
	}
	out := callError{Code: int(e.Code), CodeName: e.Code.String(), Message: e.Details, StsErrorCode: e.StsCode}
	if e.HasRetryAfter {
		out.RetryAfterMs = strconv.FormatInt(e.RetryAfterMs, 10)
	}
	return out
}

func fail(step string, err error) {
	e := describe(err)
	fmt.Fprintf(os.Stderr, "example: %s failed: %s (gRPC %d %s, sts-error-code %q)\n", step, e.Message, e.Code, e.CodeName, e.StsErrorCode)
	os.Exit(1)
}

// pb turns a message into JSON for the output object.
func pb(m proto.Message) json.RawMessage {
	b, err := protojson.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func main() {
	address := flag.String("address", env("STSCLIENT_ADDRESS", "127.0.0.1:50051"), "STS address host:port")
	appID := flag.String("app-id", env("STSCLIENT_APP_ID", ""), "application id")
	appSecret := flag.String("app-secret", env("STSCLIENT_APP_SECRET", ""), "application secret")
	username := flag.String("username", env("STSCLIENT_USERNAME", ""), "username of the user to log on")
	password := flag.String("password", env("STSCLIENT_PASSWORD", ""), "password of the user")
	subjectToken := flag.String("subject-token", env("STSCLIENT_SUBJECT_TOKEN", ""), "optional: a user's token from a trusted identity provider; calls GetUserSecret with it")
	caFile := flag.String("ca-file", env("STSCLIENT_CA_FILE", ""), "optional: PEM CA bundle that signed STS's certificate (default: the system roots)")
	plaintext := flag.Bool("insecure", env("STSCLIENT_INSECURE", "") == "true", "plaintext instead of TLS (development only)")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline of each call")
	flag.Parse()
	if *appID == "" || *appSecret == "" || *username == "" || *password == "" {
		fmt.Fprintln(os.Stderr, "example: -app-id, -app-secret, -username and -password (or STSCLIENT_APP_ID, STSCLIENT_APP_SECRET, STSCLIENT_USERNAME, STSCLIENT_PASSWORD) are required")
		os.Exit(64)
	}

	opts := []stsclient.Option{stsclient.WithCredentials(*appID, *appSecret), stsclient.WithDefaultDeadline(*timeout)}
	switch {
	case *plaintext:
		opts = append(opts, stsclient.WithInsecure())
	case *caFile != "":
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "example:", err)
			os.Exit(66)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintln(os.Stderr, "example: no certificate in", *caFile)
			os.Exit(65)
		}
		opts = append(opts, stsclient.WithTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	}
	sts, err := stsclient.New(*address, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(64)
	}
	defer sts.Close()
	ctx := context.Background()
	out := map[string]any{}

	// 1. The application logs on (the client does it at first use; here explicitly) and looks at its token.
	token, err := sts.ApplicationToken(ctx)
	if err != nil {
		fail("LogonApplication", err)
	}
	app, err := sts.Session.ValidateApplicationToken(ctx, &stsv1.ValidateApplicationTokenRequest{ApplicationTokenId: token})
	if err != nil {
		fail("ValidateApplicationToken", err)
	}
	out["applicationToken"] = pb(app.GetApplicationToken())

	// 2. A user logs on through the application (the client sends the application token).
	user, err := sts.Session.LogonUser(ctx, &stsv1.LogonUserRequest{
		Credential: &stsv1.LogonUserRequest_UserCredential{UserCredential: &stsv1.UserCredential{Username: *username, Password: *password}},
	})
	if err != nil {
		fail("LogonUser", err)
	}
	out["userLogon"] = pb(user)

	// 3. The user's token is validated (here by its signed JWT; by id works too).
	valid, err := sts.Session.ValidateUserToken(ctx, &stsv1.ValidateUserTokenRequest{
		Token: &stsv1.ValidateUserTokenRequest_UserTokenJwt{UserTokenJwt: user.GetUserTokenJwt()},
	})
	if err != nil {
		fail("ValidateUserToken", err)
	}
	out["validate"] = pb(valid)

	// 4. Handover: a one-time ticket for the session (here for this application), redeemed once.
	ticket, err := sts.Session.CreateUserTicket(ctx, &stsv1.CreateUserTicketRequest{UserTokenId: user.GetUserToken().GetUserTokenId()})
	if err != nil {
		fail("CreateUserTicket", err)
	}
	out["ticket"] = pb(ticket)
	handover, err := sts.Session.GetUserTokenByUserTicket(ctx, &stsv1.GetUserTokenByUserTicketRequest{UserTicket: ticket.GetUserTicket()})
	if err != nil {
		fail("GetUserTokenByUserTicket", err)
	}
	out["handover"] = pb(handover)

	// 5. Logout: the session ends at once; validating it again says so.
	if _, err := sts.Session.ReleaseUserToken(ctx, &stsv1.ReleaseUserTokenRequest{UserTokenId: user.GetUserToken().GetUserTokenId()}); err != nil {
		fail("ReleaseUserToken", err)
	}
	after, err := sts.Session.ValidateUserToken(ctx, &stsv1.ValidateUserTokenRequest{
		Token: &stsv1.ValidateUserTokenRequest_UserTokenId{UserTokenId: user.GetUserToken().GetUserTokenId()},
	})
	if err != nil {
		fail("ValidateUserToken", err)
	}
	out["afterLogout"] = map[string]bool{"active": after.GetActive()}

	// 6. STS's public keys (anonymous).
	jwks, err := sts.Pop.GetJwks(ctx, &stsv1.GetJwksRequest{})
	if err != nil {
		fail("GetJwks", err)
	}
	out["jwks"] = pb(jwks)

	// 7. Optional: the user's secret for a resource server, from a third-party subject token.
	if *subjectToken != "" {
		sec, err := sts.Secret.GetUserSecret(ctx, &stsv1.GetUserSecretRequest{SubjectToken: *subjectToken})
		if err != nil {
			out["userSecret"] = map[string]any{"error": describe(err)}
		} else {
			out["userSecret"] = pb(sec)
		}
	}

	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
}
