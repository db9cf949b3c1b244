// The SASL exchange of the server session: AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN
// (draft-murchison-sasl-login). The session runs the 334 challenges and decodes the responses;
// the handler decides (OnAuthStartAsync before asking, OnAuthenticateAsync on the credentials).
// A response line is capped at 12288 octets (RFC 4954 §4); "*" cancels (501); a mechanism
// offered only over TLS answers 538 in clear (RFC 4954 §6).
using System.Buffers;
using System.Text;
using Portcullis.SmtpCore.Protocol;

namespace Portcullis.SmtpCore.Server;

public sealed partial class SmtpSession
{
    private const int MaxSaslLine = 12288;  // RFC 4954 §4: at least 12288 octets for an AUTH line

    private async ValueTask AuthAsync(SmtpCommand command)
    {
        var offer = _handler.GetAuthOffer(this);
        var parts = command.Argument.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        string mechanism = parts.Length > 0 ? parts[0].ToUpperInvariant() : "";
        SmtpReply? refusal =
            offer.Mechanisms.Count == 0 ? new SmtpReply(502, "5.5.1", "AUTH not available")
            : HeloName is null || !Extended ? new SmtpReply(503, "5.5.1", "Send EHLO first")
            : AuthenticatedUser is not null ? new SmtpReply(503, "5.5.1", "Already authenticated")
            : Transaction is not null ? new SmtpReply(503, "5.5.1", "AUTH not allowed during a mail transaction")
            : parts.Length is 0 or > 2 ? new SmtpReply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
            : !offer.Mechanisms.Contains(mechanism, StringComparer.OrdinalIgnoreCase) ? new SmtpReply(504, "5.5.4", "Unrecognized authentication type")
            : null;
        if (refusal is not null) { ClientError(refusal); return; }
        if (offer.RequiresTls && !IsSecure)
        {
            Write(new SmtpReply(538, "5.7.11", "Encryption required for requested authentication mechanism"));
            return;
        }
        SmtpReply? start;
        try { start = await _handler.OnAuthStartAsync(this, mechanism, _shutdown).ConfigureAwait(false); }
        catch (Exception e) when (HandlerFailed(e))
        {
            Report(null, "AUTH", e);
            Write(Replies.LocalError);
            return;
        }
        if (start is not null)
        {
            Write(start);
            if (start.Code == 421) _closing = true;
            return;
        }

        string? initial = parts.Length == 2 ? parts[1] : null;
        SaslCredentials? credentials;
        SmtpReply? problem;
        if (mechanism == "PLAIN")
        {
            var (response, p) = initial is not null ? (initial, null) : await ChallengeAsync("").ConfigureAwait(false);
            (credentials, problem) = p is not null ? (null, p) : DecodePlain(response!);
        }
        else if (mechanism == "LOGIN")
        {
            // draft-murchison-sasl-login: "Username:" then "Password:", each base64; an initial response is the user name.
            var (user, p) = initial is not null ? (initial, null) : await ChallengeAsync("VXNlcm5hbWU6").ConfigureAwait(false);
            string? password = null;
            if (p is null) (password, p) = await ChallengeAsync("UGFzc3dvcmQ6").ConfigureAwait(false);
            (credentials, problem) = p is not null ? (null, p) : DecodeLogin(user!, password!);
        }
        else
        {
            (credentials, problem) = (null, new SmtpReply(504, "5.5.4", "Unrecognized authentication type"));
        }
        if (_closing) return;
        if (problem is not null) { ClientError(problem); return; }

        SmtpReply verdict;
        try { verdict = await _handler.OnAuthenticateAsync(this, credentials!, _shutdown).ConfigureAwait(false); }
        catch (Exception e) when (HandlerFailed(e))
        {
            Report(null, "AUTH", e);
            Write(Replies.LocalError);
            return;
        }
        if (verdict.Code == 235) AuthenticatedUser = credentials!.UserName;
        Write(verdict);
        if (verdict.Code == 421) _closing = true;
    }

    // Sends "334 challenge" and reads one response line: (line, null), or (null, reply) for "*"
    // (the client cancelled) and bad lines. A closed or silent client ends the session.
    private async Task<(string?, SmtpReply?)> ChallengeAsync(string challenge)
    {
        Write(new SmtpReply(334, null, challenge));
        await _output.FlushAsync(_shutdown).ConfigureAwait(false);
        int cap = Math.Max(_options.MaxLineLength, MaxSaslLine);
        // One command timeout for the whole line, as for commands: a response trickled a byte at
        // a time cannot hold the session open past it.
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        while (true)
        {
            var left = _options.CommandTimeout - System.Diagnostics.Stopwatch.GetElapsedTime(started);
            var read = await ReadAsync(left > TimeSpan.Zero ? left : TimeSpan.FromTicks(1), "AUTH response").ConfigureAwait(false);
            if (read is null) { _closing = true; return (null, null); }
            var buffer = read.Value.Buffer;
            var lf = buffer.PositionOf((byte)'\n');
            if (lf is null)
            {
                _input.AdvanceTo(buffer.Start, buffer.End);
                if (buffer.Length >= cap) { Write(new SmtpReply(500, "5.5.6", "Authentication exchange line is too long")); _closing = true; return (null, null); }
                if (read.Value.IsCompleted) { _closing = true; return (null, null); }
                continue;
            }
            var lineSeq = buffer.Slice(0, lf.Value);
            string line = Encoding.ASCII.GetString(lineSeq.ToArray()).TrimEnd('\r');
            _input.AdvanceTo(buffer.GetPosition(1, lf.Value));
            if (line == "*") return (null, new SmtpReply(501, "5.7.0", "Authentication cancelled"));
            return (line, null);
        }
    }

    private static (SaslCredentials?, SmtpReply?) DecodePlain(string response)
    {
        // RFC 4616: [authzid] NUL authcid NUL passwd, UTF-8. "=" is an empty initial response (RFC 4954 §4).
        if (!TryBase64(response, out var bytes)) return (null, BadBase64);
        var fields = Encoding.UTF8.GetString(bytes).Split('\0');
        if (fields.Length != 3 || fields[1].Length == 0)
            return (null, new SmtpReply(501, "5.5.2", "Malformed PLAIN response"));
        return (new SaslCredentials("PLAIN", fields[1], fields[2], fields[0]), null);
    }

    private static (SaslCredentials?, SmtpReply?) DecodeLogin(string user, string password)
    {
        if (!TryBase64(user, out var u) || !TryBase64(password, out var p)) return (null, BadBase64);
        var name = Encoding.UTF8.GetString(u);
        if (name.Length == 0 || name.Contains('\0')) return (null, new SmtpReply(501, "5.5.2", "Malformed LOGIN response"));
        return (new SaslCredentials("LOGIN", name, Encoding.UTF8.GetString(p), ""), null);
    }

    private static readonly SmtpReply BadBase64 = new(501, "5.5.2", "Cannot decode the response (base64 expected)");

    private static bool TryBase64(string text, out byte[] bytes)
    {
        bytes = [];
        if (text == "=") return true;
        if (text.Length == 0 || text.Length % 4 != 0) return false;
        bytes = new byte[text.Length / 4 * 3];
        if (!Convert.TryFromBase64String(text, bytes, out int n)) return false;
        bytes = bytes[..n];
        return true;
    }
}
