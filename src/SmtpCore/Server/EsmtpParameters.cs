// ESMTP parameters of MAIL and RCPT (RFC 5321 §4.1.2 Mail-parameters / Rcpt-parameters): SIZE
// (RFC 1870), BODY (8BITMIME RFC 6152), SMTPUTF8 (RFC 6531), RET and ENVID (DSN RFC 3461 §4.3-4),
// AUTH= (RFC 4954 §5) on MAIL; NOTIFY and ORCPT (RFC 3461 §4.1-2) on RCPT. Each is accepted only
// when its extension was advertised in this session's EHLO; anything else is 555 5.5.4. Values
// are checked here; the path syntax is PathArgumentParser's. Pure: no I/O, no session state.
using Portcullis.SmtpCore.Protocol;

namespace Portcullis.SmtpCore.Server;

internal static class EsmtpParameters
{
    public static SmtpReply? ApplyMailParameter(SmtpTransaction tx, string key, string? value,
        SmtpServerOptions options, bool extended, IReadOnlySet<string> advertised)
    {
        switch (key)
        {
            case "SIZE" when extended:
                if (value is null || !long.TryParse(value, System.Globalization.NumberStyles.None, null, out long size))
                    return new SmtpReply(501, "5.5.4", "Bad SIZE value");
                if (size > options.MaxMessageSize)
                    return new SmtpReply(552, "5.3.4", $"Message size exceeds fixed maximum message size ({options.MaxMessageSize})");
                tx.DeclaredSize = size;
                return null;
            case "BODY" when extended:
                if (string.Equals(value, "7BIT", StringComparison.OrdinalIgnoreCase)) tx.Body = BodyType.SevenBit;
                else if (string.Equals(value, "8BITMIME", StringComparison.OrdinalIgnoreCase) && options.EightBitMime) tx.Body = BodyType.EightBitMime;
                else return new SmtpReply(555, "5.5.4", $"Unsupported BODY type {value}");
                return null;
            case "SMTPUTF8" when extended && options.SmtpUtf8:
                if (value is not null) return new SmtpReply(501, "5.5.4", "SMTPUTF8 takes no value");
                tx.SmtpUtf8 = true;
                return null;
            case "RET" when advertised.Contains("DSN"):
                if (!string.Equals(value, "FULL", StringComparison.OrdinalIgnoreCase) && !string.Equals(value, "HDRS", StringComparison.OrdinalIgnoreCase))
                    return new SmtpReply(501, "5.5.4", "RET must be FULL or HDRS");
                if (tx.DsnRet is not null) return new SmtpReply(501, "5.5.4", "Duplicate RET");
                tx.DsnRet = value;
                return null;
            case "ENVID" when advertised.Contains("DSN"):
                if (string.IsNullOrEmpty(value) || value.Length > 100) return new SmtpReply(501, "5.5.4", "Bad ENVID");
                if (tx.DsnEnvId is not null) return new SmtpReply(501, "5.5.4", "Duplicate ENVID");
                tx.DsnEnvId = value;
                return null;
            case "AUTH" when advertised.Contains("AUTH"):
                // RFC 4954 §5: the original submitter, xtext or "<>"; accepted and not passed on.
                if (string.IsNullOrEmpty(value)) return new SmtpReply(501, "5.5.4", "Bad AUTH value");
                tx.AuthParameter = value;
                return null;
            default:
                return new SmtpReply(555, "5.5.4", $"Unsupported parameter {key}");
        }
    }

    public static bool TryParseRecipient(string argument, IReadOnlySet<string> advertised, out SmtpRecipient recipient, out SmtpReply? bad)
    {
        recipient = null!;
        bad = null;
        if (!PathArgumentParser.TryParse(argument, "TO:", allowNull: false, out var arg, out string error))
        {
            bad = new SmtpReply(501, "5.5.4", error);
            return false;
        }
        foreach (var (key, value) in arg.Parameters)
        {
            bool dsn = advertised.Contains("DSN");
            if (key == "NOTIFY" && dsn && value is not null && IsNotifyValue(value)) continue;
            if (key == "ORCPT" && dsn && value is not null && value.Contains(';')) continue;
            bad = key is "NOTIFY" or "ORCPT" && dsn
                ? new SmtpReply(501, "5.5.4", $"Bad {key} value")
                : new SmtpReply(555, "5.5.4", $"Unsupported parameter {key}");
            return false;
        }
        recipient = new SmtpRecipient(arg.Path, arg.Parameters);
        return true;
    }

    // RFC 3461 §4.1: "NEVER", or a comma-separated list of SUCCESS, FAILURE and DELAY.
    private static bool IsNotifyValue(string value)
    {
        if (value.Equals("NEVER", StringComparison.OrdinalIgnoreCase)) return true;
        foreach (var range in value.AsSpan().Split(','))
        {
            var item = value.AsSpan(range);
            if (!item.Equals("SUCCESS", StringComparison.OrdinalIgnoreCase) && !item.Equals("FAILURE", StringComparison.OrdinalIgnoreCase)
                && !item.Equals("DELAY", StringComparison.OrdinalIgnoreCase)) return false;
        }
        return true;
    }
}
