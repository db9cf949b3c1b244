using System.Globalization;
using System.Text;

namespace Portcullis.Appliance.Logging;

// One key=value line per message, for journald (stdout) and log processors. Fields always appear
// in the same order: session client helo from rcpt size verdict virus action downstream ms.
// A value with a space, quote, '=', backslash or control character is double-quoted with \" and \\
// escapes and control characters as \xNN; an empty value is "". Each line reaches the output in a
// single write, so lines from concurrent sessions never interleave.
public sealed class MessageLog
{
    private readonly Stream _output;
    private readonly Lock _lock = new();

    public MessageLog(Stream output)
    {
        _output = output;
    }

    public static MessageLog Stdout { get; } = new(Console.OpenStandardOutput());

    public void Write(MessageLogEntry entry)
    {
        var bytes = Encoding.UTF8.GetBytes(Format(entry) + "\n");
        lock (_lock)
        {
            _output.Write(bytes);
            _output.Flush();
        }
    }

    public static string Format(MessageLogEntry entry)
    {
        var line = new StringBuilder(256);
        Field(line, "session", entry.Session);
        Field(line, "client", entry.Client);
        Field(line, "helo", entry.Helo);
        if (entry.User.Length > 0) Field(line, "user", entry.User);
        Field(line, "from", entry.From);
        Field(line, "rcpt", string.Join(',', entry.Recipients));
        Field(line, "size", entry.Size.ToString(CultureInfo.InvariantCulture));
        Field(line, "verdict", VerdictText(entry.Verdict));
        Field(line, "virus", entry.Virus);
        Field(line, "action", entry.Action);
        Field(line, "downstream", entry.Downstream);
        Field(line, "ms", entry.Milliseconds.ToString(CultureInfo.InvariantCulture));
        return line.ToString();
    }

    public static string VerdictText(MessageVerdict verdict) => verdict switch
    {
        MessageVerdict.Clean => "clean",
        MessageVerdict.Infected => "infected",
        MessageVerdict.Error => "error",
        _ => "none",
    };

    private static void Field(StringBuilder line, string key, string? value)
    {
        if (line.Length > 0)
        {
            line.Append(' ');
        }

        line.Append(key).Append('=');
        AppendValue(line, value ?? "");
    }

    internal static void AppendValue(StringBuilder line, string value)
    {
        if (value.Length > 0 && !NeedsQuotes(value))
        {
            line.Append(value);
            return;
        }

        line.Append('"');
        foreach (var c in value)
        {
            switch (c)
            {
                case '"': line.Append("\\\""); break;
                case '\\': line.Append("\\\\"); break;
                default:
                    if (char.IsControl(c))
                    {
                        line.Append("\\x").Append(((int)c).ToString("X2", CultureInfo.InvariantCulture));
                    }
                    else
                    {
                        line.Append(c);
                    }

                    break;
            }
        }

        line.Append('"');
    }

    // A backslash is quoted too so that a reader can always undo the escapes.
    private static bool NeedsQuotes(string value)
    {
        foreach (var c in value)
        {
            if (c is ' ' or '"' or '=' or '\\' || char.IsControl(c))
            {
                return true;
            }
        }

        return false;
    }
}

public enum MessageVerdict
{
    None,
    Clean,
    Infected,
    Error,
}

// The outcome of one message transaction as it goes into the log line.
public sealed record MessageLogEntry
{
    public string Session { get; init; } = "";
    public string Client { get; init; } = "";
    public string Helo { get; init; } = "";

    // The SMTP AUTH user; the field appears only for authenticated sessions.
    public string User { get; init; } = "";
    public string From { get; init; } = "";
    public IReadOnlyList<string> Recipients { get; init; } = [];
    public long Size { get; init; }
    public MessageVerdict Verdict { get; init; }
    public string Virus { get; init; } = "";

    // One of the MessageAction words.
    public string Action { get; init; } = "";

    // The downstream's final reply, e.g. "250 2.0.0 Ok: queued as 4XyZ".
    public string Downstream { get; init; } = "";
    public long Milliseconds { get; init; }
}

// The words used for `action=`; the list grows with the gateway's policies.
public static class MessageAction
{
    public const string Delivered = "delivered";
    public const string Rejected = "rejected";
    public const string Tempfail = "tempfail";
    public const string PassedUnscanned = "passed-unscanned";
    public const string Discarded = "discarded";
    public const string Aborted = "aborted";
}
