/**
 * Calls STS with the TypeScript client (@sts/client): the application logs on, a user logs on, the user's token
 * is validated, handed over with a one-time ticket and logged out, and the JWKS is fetched; with a subject
 * token it also asks for the user's secret. Prints one JSON object with every result (protobuf JSON names,
 * camelCase) on stdout. The same source compiles as an ES module and as CommonJS.
 *
 *   STSCLIENT_ADDRESS=sts.example.org:50051 STSCLIENT_CA_FILE=ca.pem STSCLIENT_APP_ID=shop \
 *   STSCLIENT_APP_SECRET=... STSCLIENT_USERNAME=dave STSCLIENT_PASSWORD=... node example.js
 *
 * Settings (environment): STSCLIENT_ADDRESS, STSCLIENT_APP_ID, STSCLIENT_APP_SECRET, STSCLIENT_USERNAME,
 * STSCLIENT_PASSWORD, STSCLIENT_SUBJECT_TOKEN, STSCLIENT_CA_FILE and STSCLIENT_INSECURE (true: plaintext, for
 * development). They are not STS_*: that namespace is the server's, which refuses variables it does not know.
 * The connection uses TLS with the system roots unless STSCLIENT_CA_FILE or STSCLIENT_INSECURE says otherwise.
 * A failing step prints the gRPC status and the STS error code on stderr and exits 1; the optional
 * GetUserSecret step reports its failure in the JSON instead ("userSecret": {"error": ...}).
 */
import { readFileSync } from 'node:fs';
import { StsClientError, common, createStsClient, pop, session, status } from '@sts/client';

async function main(): Promise<number> {
  const env = (name: string, fallback = '') => process.env[name] ?? fallback;
  const [address, appId, appSecret, username, password] = ['ADDRESS', 'APP_ID', 'APP_SECRET', 'USERNAME', 'PASSWORD'].map((n) =>
    env(`STSCLIENT_${n}`, n === 'ADDRESS' ? '127.0.0.1:50051' : ''),
  ) as [string, string, string, string, string];
  if (!appId || !appSecret || !username || !password) {
    console.error('example: STSCLIENT_APP_ID, STSCLIENT_APP_SECRET, STSCLIENT_USERNAME and STSCLIENT_PASSWORD are required');
    return 64;
  }
  const caFile = env('STSCLIENT_CA_FILE');
  const sts = createStsClient({
    address,
    tls: env('STSCLIENT_INSECURE') === 'true' ? false : caFile ? { ca: readFileSync(caFile) } : {},
    credentials: { applicationId: appId, applicationSecret: appSecret },
  });
  const out: Record<string, unknown> = {};
  let step = 'LogonApplication';
  try {
    // 1. The application logs on (the client does it at first use; here explicitly) and looks at its token.
    const token = await sts.applicationToken();
    step = 'ValidateApplicationToken';
    const app = await sts.session.validateApplicationToken({ applicationTokenId: token });
    out.applicationToken = common.ApplicationToken.toJSON(app.applicationToken!);

    // 2. A user logs on through the application. Fields left out (ticketApplicationId) take their defaults.
    step = 'LogonUser';
    const user = await sts.session.logonUser({ credential: { $case: 'userCredential', value: { username, password } } });
    out.userLogon = session.LogonUserResponse.toJSON(user);

    // 3. The user's token is validated (here by its signed JWT; by id works too).
    step = 'ValidateUserToken';
    out.validate = session.ValidateUserTokenResponse.toJSON(await sts.session.validateUserToken({ token: { $case: 'userTokenJwt', value: user.userTokenJwt } }));

    // 4. Handover: a one-time ticket for the session (here for this application), redeemed once.
    step = 'CreateUserTicket';
    const ticket = await sts.session.createUserTicket({ userTokenId: user.userToken!.userTokenId });
    out.ticket = session.CreateUserTicketResponse.toJSON(ticket);
    step = 'GetUserTokenByUserTicket';
    out.handover = session.GetUserTokenByUserTicketResponse.toJSON(await sts.session.getUserTokenByUserTicket({ userTicket: ticket.userTicket }));

    // 5. Logout: the session ends at once; validating it again says so.
    step = 'ReleaseUserToken';
    await sts.session.releaseUserToken({ userTokenId: user.userToken!.userTokenId });
    step = 'ValidateUserToken';
    const after = await sts.session.validateUserToken({ token: { $case: 'userTokenId', value: user.userToken!.userTokenId } });
    out.afterLogout = { active: after.active };

    // 6. STS's public keys (anonymous).
    step = 'GetJwks';
    out.jwks = pop.GetJwksResponse.toJSON(await sts.pop.getJwks({}));
  } catch (err) {
    if (!(err instanceof StsClientError)) throw err;
    console.error(`example: ${step} failed: ${err.details} (gRPC ${err.code} ${status[err.code]}, sts-error-code '${err.stsCode}')`);
    sts.close();
    return 1;
  }

  // 7. Optional: the user's secret for a resource server, from a third-party subject token.
  const subjectToken = env('STSCLIENT_SUBJECT_TOKEN');
  if (subjectToken) {
    try {
      out.userSecret = await sts.secret.getUserSecret({ subjectToken });
    } catch (err) {
      if (!(err instanceof StsClientError)) throw err;
      out.userSecret = { error: { code: err.code, message: err.details, stsErrorCode: err.stsCode, ...(err.retryAfterMs === undefined ? {} : { retryAfterMs: String(err.retryAfterMs) }) } };
    }
  }
  sts.close();
  console.log(JSON.stringify(out, null, 2));
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error('example:', err);
    process.exitCode = 1;
  },
);
