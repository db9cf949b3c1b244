using Portcullis.NativeScan.Interop;

namespace Portcullis.NativeScan;

// A libclamav call failed, or the engine could not be built (missing folder, no signatures).
// ErrorCode is the cl_error_t value; the message carries cl_strerror's text and, when libclamav
// logged one on this thread, its own error line (which names the bad file and line).
public sealed class ClamAVException : Exception
{
    public ClamAVException(int errorCode, string message)
        : base(message)
    {
        ErrorCode = errorCode;
    }

    internal ClamAVException(LibClamAV.cl_error_t code, string what, string? detail)
        : this((int)code, Compose(code, what, detail))
    {
    }

    public int ErrorCode { get; }

    private static string Compose(LibClamAV.cl_error_t code, string what, string? detail)
    {
        var text = $"{what}: {LibClamAV.StrError(code)} ({code})";
        return detail is null ? text : $"{text}; libclamav: {detail}";
    }
}
