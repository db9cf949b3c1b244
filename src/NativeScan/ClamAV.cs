using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Portcullis.NativeScan.Interop;

namespace Portcullis.NativeScan;

public enum ClamAVMessageLevel
{
    Verbose,
    Warning,
    Error,
}

// Process-wide libclamav state: cl_init once, the version string, and libclamav's log lines.
public static unsafe class ClamAV
{
    private static readonly Lock InitLock = new();
    private static bool initialized;

    // libclamav reports the detail of a failure (file, line) only through its log callback:
    // the error lines logged on this thread since the last TakeLastError.
    [ThreadStatic]
    private static string? lastError;

    // Where libclamav's warnings and errors go; null writes them to stderr as libclamav would.
    public static Action<ClamAVMessageLevel, string>? MessageSink { get; set; }

    public static string Version
    {
        get
        {
            Initialize();
            return LibClamAV.Utf8(LibClamAV.cl_retver()) ?? "unknown";
        }
    }

    public static void Initialize()
    {
        if (Volatile.Read(ref initialized))
        {
            return;
        }

        lock (InitLock)
        {
            if (initialized)
            {
                return;
            }

            LibClamAV.cl_set_clcb_msg(&OnMessage);
            LibClamAV.ThrowIfError(LibClamAV.cl_init(LibClamAV.CL_INIT_DEFAULT), "cl_init");
            Volatile.Write(ref initialized, true);
        }
    }

    internal static string? TakeLastError()
    {
        var error = lastError;
        lastError = null;
        return error;
    }

    [UnmanagedCallersOnly(CallConvs = new[] { typeof(CallConvCdecl) })]
    private static void OnMessage(LibClamAV.cl_msg severity, byte* fullmsg, byte* msg, void* context)
    {
        try
        {
            var text = (LibClamAV.Utf8(msg) ?? string.Empty).TrimEnd('\r', '\n');
            var level = severity switch
            {
                LibClamAV.cl_msg.CL_MSG_ERROR => ClamAVMessageLevel.Error,
                LibClamAV.cl_msg.CL_MSG_WARN => ClamAVMessageLevel.Warning,
                _ => ClamAVMessageLevel.Verbose,
            };
            // Keep the first few: the root cause comes first, the summary lines after it.
            if (level == ClamAVMessageLevel.Error && (lastError?.Length ?? 0) < 1024)
            {
                lastError = lastError is null ? text : $"{lastError}; {text}";
            }

            var sink = MessageSink;
            if (sink is not null)
            {
                sink(level, text);
            }
            else if (level != ClamAVMessageLevel.Verbose)
            {
                Console.Error.WriteLine($"LibClamAV {level}: {text}");
            }
        }
        catch
        {
            // An exception must never unwind into libclamav's C frames.
        }
    }
}
