using System.Buffers;
using System.Globalization;
using System.Text;

namespace Portcullis.Appliance.Logging;

// One key=value line per message, for journald (stdout) and log processors. Fields always appear
// in the same order: session client helo [user] from rcpt size verdict virus action [reason]
// [reply] downstream ms, then quarantine when a copy was kept (bracketed fields only when set).
// A value with a space, quote, '=', backslash or control character is double-quoted with \" and \\
// escapes and control characters as \xNN; an empty value is "". Each line reaches the output in a
// single write, so lines from concurrent sessions never interleave.
//
// A transaction that ends without delivery before any content arrived (relay refused, downstream
// down at MAIL, AUTH failed, a limit hit, no signatures yet) gets its line from NotDelivered, with
// a reason word from NotDeliveredReason and the reply the client got.
//
// With a folder ([log] folder) every line also goes to portcullis-YYYY-MM-DD.log there (local date),
// a new file each day, each line starting with its RFC 3339 time (local, with offset; stdout has
// none: journald stamps its own). A file that cannot be written is reported once and retried with
// each line.
//
// With a LogWriter (the daemon), Write only enqueues: the writer thread does the writes and the
// flushes (see LogWriter for a full channel and shutdown). Without one, Write writes at once.
public sealed class MessageLog : IDisposable, ILogTarget
{
    private readonly Stream _output;
    private readonly string? _folder;
    private readonly Func<DateTime> _now;
    private readonly LogWriter? _writer;
    private readonly Lock _lock = new();
    private FileStream? _file;
    private DateOnly _fileDate;
    private bool _fileFailed;

    public MessageLog(Stream output, string? folder = null, Func<DateTime>? now = null, LogWriter? writer = null)
    {
        _output = output;
        _folder = string.IsNullOrEmpty(folder) ? null : folder;
        _now = now ?? (() => DateTime.Now);
        _writer = writer;
    }

    public static MessageLog Stdout { get; } = new(Console.OpenStandardOutput());

    public static string FileName(DateOnly date) => $"portcullis-{date:yyyy-MM-dd}.log";

    // The line goes to the writer in a pooled array, not a string: one per message adds up.
    public void Write(MessageLogEntry entry)
    {
        var line = FormatInto(entry, newline: true);
        var text = ArrayPool<char>.Shared.Rent(line.Length);
        line.CopyTo(0, text, line.Length);
        int length = line.Length;
        Release(line);
        var time = new DateTimeOffset(_now());
        if (_writer is null || !_writer.EnqueueRented(this, text, length, time))
        {
            ((ILogTarget)this).WriteLine(text.AsSpan(0, length), time);
            ((ILogTarget)this).Flush();
            ArrayPool<char>.Shared.Return(text);
        }
    }

    // The line for a transaction that ended before any content was scanned: verdict=none, action
    // tempfail (a 4xx reply) or refused (5xx), the reason word and the reply the client got.
    public void NotDelivered(MessageLogEntry entry, string reason, string reply) =>
        Write(entry with
        {
            Verdict = MessageVerdict.None,
            Action = reply.StartsWith('4') ? MessageAction.Tempfail : MessageAction.Refused,
            Reason = reason,
            Reply = reply,
        });

    public void Dispose()
    {
        lock (_lock)
        {
            _file?.Dispose();
            _file = null;
        }
    }

    void ILogTarget.WriteLine(ReadOnlySpan<char> text, DateTimeOffset time)
    {
        // Room for the file's copy too: the time, a space, then the line again.
        var bytes = ArrayPool<byte>.Shared.Rent(2 * Encoding.UTF8.GetMaxByteCount(text.Length) + 64);
        try
        {
            int length = Encoding.UTF8.GetBytes(text, bytes);
            lock (_lock)
            {
                _output.Write(bytes, 0, length);
                if (_folder is not null)
                {
                    var stamped = bytes.AsSpan(length);
                    Span<char> stamp = stackalloc char[64];
                    time.TryFormat(stamp, out int stampLength, TimestampFormat, CultureInfo.InvariantCulture);
                    int at = Encoding.UTF8.GetBytes(stamp[..stampLength], stamped);
                    stamped[at++] = (byte)' ';
                    at += Encoding.UTF8.GetBytes(text, stamped[at..]);
                    WriteFile(stamped[..at], DateOnly.FromDateTime(time.DateTime));
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bytes);
        }
    }

    void ILogTarget.Flush()
    {
        lock (_lock)
        {
            _output.Flush();
            try
            {
                _file?.Flush();
            }
            catch (IOException)
            {
                // Reported by the next WriteFile, which reopens the file.
            }
        }
    }

    // RFC 3339 with milliseconds and the local offset: 2026-12-06T03:04:05.678+01:00.
    private const string TimestampFormat = "yyyy-MM-dd'T'HH:mm:ss.fffzzz";

    private void WriteFile(ReadOnlySpan<byte> bytes, DateOnly today)
    {
        try
        {
            if (_file is null || _fileDate != today)
            {
                _file?.Dispose();
                _file = null;
                Directory.CreateDirectory(_folder!);
                _file = new FileStream(Path.Combine(_folder!, FileName(today)), FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete);
                _fileDate = today;
            }

            _file.Write(bytes);
            _fileFailed = false;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _file?.Dispose();
            _file = null;
            if (!_fileFailed)
            {
                Log.Warn($"cannot write the message log in {_folder}: {e.Message} (stdout still has every line)");
            }

            _fileFailed = true;
        }
    }

    public static string Format(MessageLogEntry entry)
    {
        var line = FormatInto(entry, newline: false);
        var text = line.ToString();
        Release(line);
        return text;
    }

    // A line is built in the thread's own builder (~300 characters: no regrowth), reused line
    // after line.
    [ThreadStatic] private static StringBuilder? spareLine;

    // The line in the thread's builder; Release gives it back.
    private static StringBuilder FormatInto(MessageLogEntry entry, bool newline)
    {
        var line = spareLine ?? new StringBuilder(512);
        spareLine = null;
        line.Clear();
        Field(line, "session", entry.Session);
        Field(line, "client", entry.Client);
        Field(line, "helo", entry.Helo);
        if (entry.User.Length > 0) Field(line, "user", entry.User);
        Field(line, "from", entry.From);
        Field(line, "rcpt", entry.Recipients.Count == 1 ? entry.Recipients[0] : string.Join(',', entry.Recipients));
        Number(line, "size", entry.Size);
        Field(line, "verdict", VerdictText(entry.Verdict));
        Field(line, "virus", entry.Virus);
        Field(line, "action", entry.Action);
        if (entry.Reason.Length > 0) Field(line, "reason", entry.Reason);
        if (entry.Reply.Length > 0) Field(line, "reply", entry.Reply);
        Field(line, "downstream", entry.Downstream);
        Number(line, "ms", entry.Milliseconds);
        if (entry.Quarantine.Length > 0)
        {
            Field(line, "quarantine", entry.Quarantine);
        }

        if (newline)
        {
            line.Append('\n');
        }

        return line;
    }

    private static void Release(StringBuilder line)
    {
        if (line.Capacity <= 4096) spareLine = line;
    }

    // A number never needs quotes; formatted into the line without a string of its own.
    private static void Number(StringBuilder line, string key, long value) =>
        line.Append(' ').Append(key).Append('=').Append(CultureInfo.InvariantCulture, $"{value}");

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

    // The quarantine id of the copy kept, if any (the field is left out when empty).
    public string Quarantine { get; init; } = "";

    // Why a transaction ended without delivery (a NotDeliveredReason word); left out when empty.
    public string Reason { get; init; } = "";

    // The gateway's own reply to the client when it refused the transaction; left out when empty.
    public string Reply { get; init; } = "";
}

// The reason words of transactions that end without delivery (MessageLog.NotDelivered).
public static class NotDeliveredReason
{
    public const string RelayRefused = "relay-refused";
    public const string DownstreamUnavailable = "downstream-unavailable";
    public const string AuthFailed = "auth-failed";
    public const string ConnectionLimit = "connection-limit";
    public const string RecipientLimit = "recipient-limit";
    public const string SignaturesNotLoaded = "signatures-not-loaded";
}

// The words used for `action=`; the list grows with the gateway's policies.
public static class MessageAction
{
    public const string Delivered = "delivered";
    public const string Rejected = "rejected";
    public const string Tempfail = "tempfail";
    public const string PassedUnscanned = "passed-unscanned";
    public const string Discarded = "discarded";
    public const string Stripped = "stripped";
    public const string Tagged = "tagged";
    public const string Aborted = "aborted";
    public const string Refused = "refused";
}
