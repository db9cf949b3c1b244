using Portcullis.NativeScan.Interop;

namespace Portcullis.NativeScan;

public enum ScanOutcome
{
    Clean,
    Infected,
    Error,
}

// A verdict. Infected carries the signature name (heuristics such as
// Heuristics.Limits.Exceeded.MaxFileSize come back as names too); Error carries the cl_error_t
// code and its text (CL_ETIMEOUT for a scan that ran out of time).
public readonly record struct ScanResult(ScanOutcome Outcome, string? VirusName, int ErrorCode, string? ErrorText)
{
    // CL_ETIMEOUT: libclamav's scan time limit or the pool's deadline.
    public const int TimeoutCode = (int)LibClamAV.cl_error_t.CL_ETIMEOUT;

    // A clean verdict that passed only because alert_exceeds_max is off: the limit that was hit
    // (Heuristics.Limits.Exceeded.MaxFileSize...), so the caller can log it.
    public string? SkippedLimit { get; init; }

    public bool IsTimeout => Outcome == ScanOutcome.Error && ErrorCode == TimeoutCode;

    public static ScanResult Clean => default;

    public static ScanResult Infected(string virusName) => new(ScanOutcome.Infected, virusName, 0, null);

    public static ScanResult Error(int errorCode, string errorText) => new(ScanOutcome.Error, null, errorCode, errorText);

    public override string ToString() => Outcome switch
    {
        ScanOutcome.Infected => $"Infected {VirusName}",
        ScanOutcome.Error => $"Error {ErrorCode} {ErrorText}",
        _ => "Clean",
    };
}
