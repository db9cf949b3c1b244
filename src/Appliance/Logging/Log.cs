using System.Globalization;
using System.Text;
using System.Runtime.InteropServices;

namespace Portcullis.Appliance.Logging;

// Daemon messages on stderr, one key=value line each: level first, then msg, then fields.
//   level=warn msg="downstream failed during delivery: connection reset" session=0000000B4F
// Values are quoted and escaped as in the message log (MessageLog.AppendValue), so a multi-line
// text stays one line. Leading key=value words of a message ("session=X client=Y refused: ...")
// become fields of their own.
// When stderr is the journal ($JOURNAL_STREAM names the device:inode of descriptor 2) each line
// starts with its sd-daemon(3) priority (<3> error, <4> warning, <6> info), which journald takes
// as the priority and strips; on a terminal or a file the prefix is left out.
// While the daemon's LogWriter runs, lines go through its channel (never a write on the caller's
// thread); otherwise (the CLI verbs) they are written at once.
public static class Log
{
    private static readonly StreamTarget StderrTarget = new(Console.OpenStandardError());

    // Set once at start-up from the environment; tests set it directly.
    public static bool ToJournal { get; internal set; } = Journal.IsStderr();

    internal static ILogTarget Stderr => StderrTarget;

    public static void Info(string message) => Write(LogLevel.Info, message);

    public static void Warn(string message) => Write(LogLevel.Warning, message);

    public static void Error(string message) => Write(LogLevel.Error, message);

    public static void Info(string message, params ReadOnlySpan<(string Key, string? Value)> fields) => Write(LogLevel.Info, message, fields);

    public static void Warn(string message, params ReadOnlySpan<(string Key, string? Value)> fields) => Write(LogLevel.Warning, message, fields);

    public static void Error(string message, params ReadOnlySpan<(string Key, string? Value)> fields) => Write(LogLevel.Error, message, fields);

    // Tests point this at a MemoryStream.
    internal static Stream Output
    {
        get => StderrTarget.Stream;
        set => StderrTarget.Stream = value;
    }

    internal static void Write(LogLevel level, string message, ReadOnlySpan<(string Key, string? Value)> fields = default)
    {
        var line = FormatLine(level, message, ToJournal, fields);
        var now = DateTimeOffset.Now;
        if (LogWriter.Current is not { } writer || !writer.Enqueue(StderrTarget, line, now))
        {
            StderrTarget.WriteLine(line, now);
            StderrTarget.Flush();
        }
    }

    // One line, with its newline.
    internal static string FormatLine(LogLevel level, string message, bool journal, ReadOnlySpan<(string Key, string? Value)> fields = default)
    {
        var text = new StringBuilder(message.Length + 48);
        if (journal)
        {
            text.Append(level switch { LogLevel.Error => "<3>", LogLevel.Warning => "<4>", _ => "<6>" });
        }

        text.Append("level=").Append(LevelWord(level));
        var rest = HoistFields(message.TrimEnd('\n', '\r'), out var leading);
        text.Append(" msg=");
        MessageLog.AppendValue(text, rest);
        foreach (var (key, value) in leading)
        {
            text.Append(' ').Append(key).Append('=');
            MessageLog.AppendValue(text, value);
        }

        foreach (var (key, value) in fields)
        {
            text.Append(' ').Append(key).Append('=');
            MessageLog.AppendValue(text, value ?? "");
        }

        return text.Append('\n').ToString();
    }

    public static string LevelWord(LogLevel level) => level switch
    {
        LogLevel.Error => "error",
        LogLevel.Warning => "warn",
        _ => "info",
    };

    // "session=X client=Y refused: ..." → fields session, client and the text "refused: ...".
    // A word counts as a field only if it is key=value with a lower-case key and a plain value.
    internal static string HoistFields(string message, out List<(string Key, string Value)> fields)
    {
        fields = [];
        var at = 0;
        while (at < message.Length)
        {
            var end = message.IndexOf(' ', at);
            var word = end < 0 ? message[at..] : message[at..end];
            var equals = word.IndexOf('=');
            if (equals <= 0 || equals == word.Length - 1 || !IsKey(word.AsSpan(0, equals)) || word.AsSpan(equals + 1).IndexOfAny("\"\\=") >= 0)
            {
                break;
            }

            fields.Add((word[..equals], word[(equals + 1)..]));
            at = end < 0 ? message.Length : end + 1;
        }

        return message[at..];
    }

    private static bool IsKey(ReadOnlySpan<char> key)
    {
        foreach (var c in key)
        {
            if (c is not ((>= 'a' and <= 'z') or '_'))
            {
                return false;
            }
        }

        return true;
    }

    // Stderr (or a test's stream); locks only against a direct write racing the writer thread.
    private sealed class StreamTarget(Stream stream) : ILogTarget
    {
        private readonly Lock gate = new();

        public Stream Stream { get; set; } = stream;

        public void WriteLine(ReadOnlySpan<char> text, DateTimeOffset time)
        {
            var bytes = new byte[Encoding.UTF8.GetByteCount(text)];
            Encoding.UTF8.GetBytes(text, bytes);
            lock (gate)
            {
                Stream.Write(bytes);
            }
        }

        public void Flush()
        {
            lock (gate)
            {
                Stream.Flush();
            }
        }
    }
}

// sd_journal_stream_fd(3)'s promise: $JOURNAL_STREAM is "device:inode" of the stream systemd
// connected stdout/stderr to. Descriptor 2 is that stream only if fstat gives the same pair
// (a redirect in a script keeps the variable but changes the descriptor).
internal static partial class Journal
{
    public static bool IsStderr() => Matches(Environment.GetEnvironmentVariable("JOURNAL_STREAM"), DeviceAndInode(2));

    // st_dev and st_ino open struct stat on every 64-bit Linux ABI (x86_64 and aarch64 alike).
    internal static (ulong Device, ulong Inode)? DeviceAndInode(int fd)
    {
        var buffer = new byte[256]; // larger than struct stat on either architecture
        try
        {
            if (fstat(fd, ref buffer[0]) != 0 || !Environment.Is64BitProcess)
            {
                return null;
            }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }

        return (BitConverter.ToUInt64(buffer, 0), BitConverter.ToUInt64(buffer, 8));
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fstat(int fd, ref byte stat);

    internal static bool Matches(string? journalStream, (ulong Device, ulong Inode)? stderr)
    {
        if (stderr is not { } actual || string.IsNullOrEmpty(journalStream))
        {
            return false;
        }

        var colon = journalStream.IndexOf(':');
        return colon > 0
               && ulong.TryParse(journalStream.AsSpan(0, colon), NumberStyles.None, CultureInfo.InvariantCulture, out var device)
               && ulong.TryParse(journalStream.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var inode)
               && device == actual.Device && inode == actual.Inode;
    }
}

public enum LogLevel
{
    Info,
    Warning,
    Error,
}
