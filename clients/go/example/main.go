// Command example calls STS with the generated Go client: it logs an application on, logs a user on,
// validates the user's token, fetches the JWKS and, when given a subject token, asks for the user's secret.
// It prints one JSON object with every result (protobuf JSON names, camelCase) on stdout.
//
//	go run ./example -address 127.0.0.1:50051 -app-id shop -app-secret ... -username dave -password ...
//
// Every flag also has an environment variable: STS_ADDRESS, STS_APP_ID, STS_APP_SECRET, STS_USERNAME,
// STS_PASSWORD, STS_SUBJECT_TOKEN, STS_CA_FILE. A failing step prints the gRPC status and the STS error code
// (trailing metadata sts-error-code) on stderr and exits 1; the optional GetUserSecret step reports its
// failure in the JSON instead ("userSecret": {"error": ...}), since not every deployment serves it.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

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

func describe(err error, trailer metadata.MD) callError {
	st := status.Convert(err)
	e := callError{Code: int(st.Code()), CodeName: st.Code().String(), Message: st.Message()}
	if v := trailer.Get("sts-error-code"); len(v) > 0 {
		e.StsErrorCode = v[0]
	}
	if v := trailer.Get("retry-after-ms"); len(v) > 0 {
		e.RetryAfterMs = v[0]
	}
	return e
}

func fail(step string, err error, trailer metadata.MD) {
	e := describe(err, trailer)
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
	address := flag.String("address", env("STS_ADDRESS", "127.0.0.1:50051"), "STS address host:port")
	appID := flag.String("app-id", env("STS_APP_ID", ""), "application id")
	appSecret := flag.String("app-secret", env("STS_APP_SECRET", ""), "application secret")
	username := flag.String("username", env("STS_USERNAME", ""), "username of the user to log on")
	password := flag.String("password", env("STS_PASSWORD", ""), "password of the user")
	subjectToken := flag.String("subject-token", env("STS_SUBJECT_TOKEN", ""), "optional: a user's token from a trusted identity provider; calls GetUserSecret with it")
	caFile := flag.String("ca-file", env("STS_CA_FILE", ""), "optional: PEM CA bundle; enables TLS (plaintext without it)")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline of each call")
	flag.Parse()
	if *appID == "" || *appSecret == "" || *username == "" || *password == "" {
		fmt.Fprintln(os.Stderr, "example: -app-id, -app-secret, -username and -password (or STS_APP_ID, STS_APP_SECRET, STS_USERNAME, STS_PASSWORD) are required")
		os.Exit(64)
	}

	creds := insecure.NewCredentials()
	if *caFile != "" {
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
		creds = credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	}
	conn, err := grpc.NewClient(*address, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(64)
	}
	defer conn.Close()
	session := stsv1.NewSessionServiceClient(conn)
	pop := stsv1.NewPopServiceClient(conn)
	secret := stsv1.NewSecretServiceClient(conn)

	// Each call gets its own deadline; the trailer carries sts-error-code when a call fails.
	call := func(bearer string) (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		if bearer != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bearer)
		}
		return ctx, cancel
	}
	out := map[string]any{}

	// 1. The application logs on (anonymous call) and gets its application token.
	var trailer metadata.MD
	ctx, cancel := call("")
	app, err := session.LogonApplication(ctx, &stsv1.LogonApplicationRequest{
		Credential: &stsv1.LogonApplicationRequest_ApplicationCredential{
			ApplicationCredential: &stsv1.ApplicationCredential{ApplicationId: *appID, ApplicationSecret: *appSecret},
		},
	}, grpc.Trailer(&trailer))
	cancel()
	if err != nil {
		fail("LogonApplication", err, trailer)
	}
	token := app.GetApplicationToken().GetApplicationTokenId()
	out["applicationToken"] = pb(app.GetApplicationToken())

	// 2. A user logs on through the application.
	ctx, cancel = call(token)
	user, err := session.LogonUser(ctx, &stsv1.LogonUserRequest{
		Credential: &stsv1.LogonUserRequest_UserCredential{UserCredential: &stsv1.UserCredential{Username: *username, Password: *password}},
	}, grpc.Trailer(&trailer))
	cancel()
	if err != nil {
		fail("LogonUser", err, trailer)
	}
	out["userLogon"] = pb(user)

	// 3. The user's token is validated (here by its signed JWT; by id works too).
	ctx, cancel = call(token)
	valid, err := session.ValidateUserToken(ctx, &stsv1.ValidateUserTokenRequest{
		Token: &stsv1.ValidateUserTokenRequest_UserTokenJwt{UserTokenJwt: user.GetUserTokenJwt()},
	}, grpc.Trailer(&trailer))
	cancel()
	if err != nil {
		fail("ValidateUserToken", err, trailer)
	}
	out["validate"] = pb(valid)

	// 4. STS's public keys (anonymous).
	ctx, cancel = call("")
	jwks, err := pop.GetJwks(ctx, &stsv1.GetJwksRequest{}, grpc.Trailer(&trailer))
	cancel()
	if err != nil {
		fail("GetJwks", err, trailer)
	}
	out["jwks"] = pb(jwks)

	// 5. Optional: the user's secret for a resource server, from a third-party subject token.
	if *subjectToken != "" {
		ctx, cancel = call(token)
		sec, err := secret.GetUserSecret(ctx, &stsv1.GetUserSecretRequest{SubjectToken: *subjectToken}, grpc.Trailer(&trailer))
		cancel()
		if err != nil {
			out["userSecret"] = map[string]any{"error": describe(err, trailer)}
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
