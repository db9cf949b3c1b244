using System.Text;

namespace Portcullis.Appliance.Logging;

// Daemon messages on stderr, each line prefixed with its sd-daemon(3) level (<6> info, <4> warning,
// <3> error) so journald records the priority. A multi-line message gets the prefix on every line.
// One write per call, so concurrent callers never interleave within a message.
public static class Log
{
    private static readonly Lock WriteLock = new();
    private static Stream _output = Console.OpenStandardError();

    public static void Info(string message) => Write(LogLevel.Info, message);

    public static void Warn(string message) => Write(LogLevel.Warning, message);

    public static void Error(string message) => Write(LogLevel.Error, message);

    // Tests point this at a MemoryStream.
    internal static Stream Output
    {
        get => _output;
        set => _output = value;
    }

    internal static void Write(LogLevel level, string message)
    {
        var bytes = Encoding.UTF8.GetBytes(Format(level, message));
        lock (WriteLock)
        {
            _output.Write(bytes);
            _output.Flush();
        }
    }

    internal static string Format(LogLevel level, string message)
    {
        var prefix = level switch
        {
            LogLevel.Error => "<3>",
            LogLevel.Warning => "<4>",
            _ => "<6>",
        };

        var text = new StringBuilder(message.Length + 8);
        foreach (var line in message.TrimEnd('\n', '\r').Split('\n'))
        {
            text.Append(prefix).Append(line.TrimEnd('\r')).Append('\n');
        }

        return text.ToString();
    }
}

internal enum LogLevel
{
    Info,
    Warning,
    Error,
}
