namespace Portcullis.Appliance.Messages;

// The memory all message buffers of the process may hold at once ([limits] memory_budget). A
// buffer reserves each in-memory segment here before it rents it and gives the reservation back
// when it spills or is disposed; a refused reservation makes the buffer spill to temp_folder at
// once (and a message that starts past the budget goes to disk from its first byte). This bounds
// the worst case that memory_threshold x max_connections alone would allow.
public sealed class MessageMemoryBudget
{
    private long limit;
    private long reserved;

    public MessageMemoryBudget(long limit)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(limit);
        this.limit = limit;
    }

    // The process-wide budget every MessageBuffer uses unless it is given another; the gateway
    // sets its Limit from the configuration at start and on a configuration reload.
    public static MessageMemoryBudget Shared { get; } = new(DefaultLimit());

    // Bytes; long.MaxValue when there is no limit. A lower limit only refuses new reservations:
    // what is reserved stays until it is released.
    public long Limit
    {
        get => Interlocked.Read(ref limit);
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            Interlocked.Exchange(ref limit, value);
        }
    }

    public long Reserved => Interlocked.Read(ref reserved);

    public bool TryReserve(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        var now = Interlocked.Read(ref reserved);
        while (true)
        {
            if (bytes > Limit - now)
            {
                return false;
            }

            var seen = Interlocked.CompareExchange(ref reserved, now + bytes, now);
            if (seen == now)
            {
                return true;
            }

            now = seen;
        }
    }

    public void Release(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        var after = Interlocked.Add(ref reserved, -bytes);
        if (after < 0)
        {
            throw new InvalidOperationException($"released {bytes} bytes more than were reserved (reserved now {after})");
        }
    }

    // The limit [limits] memory_budget asks for: null is auto, 0 is none.
    public static long LimitFor(long? configured) => configured switch
    {
        null => DefaultLimit(),
        0 => long.MaxValue,
        { } bytes => bytes,
    };

    // What the configuration's `auto` means: 1/8 of the memory this process may use, which the
    // runtime reads as the machine's RAM (MemTotal) or the cgroup's memory limit when that is
    // lower (systemd's MemoryMax=, a container's limit).
    public static long DefaultLimit() => DefaultLimit(AvailableMemory());

    public static long DefaultLimit(long availableMemory) => Math.Max(availableMemory, 0) / 8;

    private static long AvailableMemory()
    {
        var available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        return available > 0 ? available : MemTotal();
    }

    // Only if the runtime reported nothing: /proc/meminfo's "MemTotal:   24683468 kB".
    private static long MemTotal()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
            {
                if (line.StartsWith("MemTotal:", StringComparison.Ordinal)
                    && long.TryParse(line.AsSpan(9).Trim().TrimEnd("kB").Trim(), out var kib))
                {
                    return kib * 1024;
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // No /proc: fall through to a conservative guess.
        }

        return 1L << 30;
    }
}
