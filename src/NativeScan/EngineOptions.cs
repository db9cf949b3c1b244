namespace Portcullis.NativeScan;

// Settings an engine is built with; a reload copies them to the next engine (as clamd does).
// Defaults are clamd 1.4's. ScanTimeout becomes CL_ENGINE_MAX_SCANTIME, so libclamav itself
// abandons a scan that runs too long; Zero or InfiniteTimeSpan means no limit.
public sealed record EngineOptions(string DatabaseFolder)
{
    public long MaxScanSize { get; init; } = 400L * 1024 * 1024;

    public long MaxFileSize { get; init; } = 100L * 1024 * 1024;

    public int MaxRecursion { get; init; } = 17;

    public int MaxFiles { get; init; } = 10_000;

    // Report Heuristics.Limits.Exceeded.* instead of passing content that was not fully scanned.
    public bool AlertExceedsMax { get; init; } = true;

    public TimeSpan ScanTimeout { get; init; } = TimeSpan.FromMinutes(2);

    // Where libclamav unpacks attachments and archives; null uses its default ($TMPDIR or /tmp).
    public string? TempFolder { get; init; }

    // libclamav's clean cache. Off in every engine the gateway builds (see ScanEngine.Load); only the
    // test that shows why it must stay off turns it on.
    internal bool CleanCache { get; init; }

    internal uint ScanTimeoutMilliseconds
    {
        get
        {
            if (ScanTimeout == Timeout.InfiniteTimeSpan)
            {
                return 0;
            }

            // Round up so a sub-millisecond timeout does not turn into "no limit".
            return (uint)Math.Ceiling(ScanTimeout.TotalMilliseconds);
        }
    }

    internal void Validate()
    {
        if (string.IsNullOrWhiteSpace(DatabaseFolder))
        {
            throw new ArgumentException("a database folder is required", nameof(DatabaseFolder));
        }

        ArgumentOutOfRangeException.ThrowIfNegative(MaxScanSize);
        ArgumentOutOfRangeException.ThrowIfNegative(MaxFileSize);
        ArgumentOutOfRangeException.ThrowIfNegative(MaxRecursion);
        ArgumentOutOfRangeException.ThrowIfNegative(MaxFiles);
        if (ScanTimeout != Timeout.InfiniteTimeSpan
            && (ScanTimeout < TimeSpan.Zero || ScanTimeout.TotalMilliseconds > uint.MaxValue))
        {
            throw new ArgumentOutOfRangeException(nameof(ScanTimeout), ScanTimeout, "must be between 0 and 49 days");
        }
    }
}
