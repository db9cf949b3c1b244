namespace Portcullis.SmtpCore.Server;

// What a client presented with AUTH PLAIN or LOGIN (RFC 4954, RFC 4616, draft-murchison-sasl-login):
// the authentication identity and password; PLAIN may carry an authorization identity too.
public sealed record SaslCredentials(string Mechanism, string UserName, string Password, string AuthorizationId)
{
    public override string ToString() => $"{Mechanism} user={UserName}"; // never the password
}

// What AUTH is on offer: the mechanisms (empty: AUTH is not available at all) and whether they
// are offered only on a TLS-protected connection (before TLS: 538 5.7.11, RFC 4954 §6).
public sealed record SaslOffer(IReadOnlyList<string> Mechanisms, bool RequiresTls)
{
    public static SaslOffer None { get; } = new([], false);
}
