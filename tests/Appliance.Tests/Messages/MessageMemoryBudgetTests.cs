using FsCheck;
using FsCheck.Xunit;
using Portcullis.Appliance.Messages;
using Xunit;

namespace Portcullis.Appliance.Tests.Messages;

// [limits] memory_budget: the process-wide room for message buffers in memory, and how a
// MessageBuffer spills at once when the budget has none left.
public sealed class MessageMemoryBudgetTests : IDisposable
{
    private const int Segment = MessageBuffer.SegmentSize;
    private readonly string _temp = Directory.CreateTempSubdirectory("portcullis-budget-").FullName;

    public void Dispose() => Directory.Delete(_temp, recursive: true);

    private static byte[] Pattern(int length, int seed = 1)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    private static void Write(MessageBuffer buffer, ReadOnlySpan<byte> data, int chunk = 4096)
    {
        while (!data.IsEmpty)
        {
            var span = buffer.GetSpan(Math.Min(chunk, data.Length));
            var n = Math.Min(Math.Min(chunk, data.Length), span.Length);
            data[..n].CopyTo(span);
            buffer.Advance(n);
            data = data[n..];
        }
    }

    private static byte[] ReadAll(MessageBuffer buffer)
    {
        var result = new byte[buffer.Length];
        long offset = 0;
        while (offset < buffer.Length)
        {
            offset += buffer.Read(offset, result.AsSpan((int)offset));
        }

        return result;
    }

    [Fact]
    public void Reserves_up_to_the_limit_and_refuses_past_it()
    {
        var budget = new MessageMemoryBudget(100);

        Assert.True(budget.TryReserve(60));
        Assert.True(budget.TryReserve(40));
        Assert.False(budget.TryReserve(1));
        Assert.Equal(100, budget.Reserved);

        budget.Release(40);
        Assert.True(budget.TryReserve(30));
        Assert.False(budget.TryReserve(11));
        Assert.Equal(90, budget.Reserved);
    }

    [Fact]
    public void Releasing_more_than_was_reserved_is_a_bug_that_throws()
    {
        var budget = new MessageMemoryBudget(100);
        Assert.True(budget.TryReserve(10));

        Assert.Throws<InvalidOperationException>(() => budget.Release(11));
        Assert.Throws<ArgumentOutOfRangeException>(() => budget.TryReserve(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MessageMemoryBudget(-1));
    }

    [Fact]
    public void Lowering_the_limit_keeps_what_is_reserved_and_refuses_new_reservations()
    {
        var budget = new MessageMemoryBudget(1000);
        Assert.True(budget.TryReserve(800));

        budget.Limit = 500;

        Assert.Equal(800, budget.Reserved);
        Assert.False(budget.TryReserve(1));
        budget.Release(400);
        Assert.True(budget.TryReserve(100));
        Assert.False(budget.TryReserve(1));
    }

    [Fact]
    public async Task Concurrent_reservations_never_exceed_the_limit()
    {
        const long limit = 10 * Segment;
        var budget = new MessageMemoryBudget(limit);
        using var go = new ManualResetEventSlim();
        var granted = 0;
        var peak = 0L;
        var workers = Enumerable.Range(0, 8).Select(_ => Task.Factory.StartNew(() =>
        {
            go.Wait();
            for (var i = 0; i < 20_000; i++)
            {
                if (!budget.TryReserve(Segment))
                {
                    continue;
                }

                Interlocked.Increment(ref granted);
                var now = budget.Reserved;
                long seen;
                while (now > (seen = Interlocked.Read(ref peak)) && Interlocked.CompareExchange(ref peak, now, seen) != seen)
                {
                }

                budget.Release(Segment);
            }
        }, TaskCreationOptions.LongRunning)).ToArray();

        go.Set();
        await Task.WhenAll(workers);

        Assert.True(granted > 0);
        Assert.InRange(Interlocked.Read(ref peak), Segment, limit);
        Assert.Equal(0, budget.Reserved);
    }

    [Fact]
    public void Auto_is_an_eighth_of_the_memory_the_process_may_use()
    {
        Assert.Equal(3L << 30, MessageMemoryBudget.DefaultLimit(24L << 30));
        Assert.Equal(0, MessageMemoryBudget.DefaultLimit(-1));

        // On this machine: at most an eighth of MemTotal (less under a cgroup limit), never nothing.
        var memTotal = File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal:", StringComparison.Ordinal));
        var kib = long.Parse(memTotal["MemTotal:".Length..].Trim().Split(' ')[0]);
        Assert.InRange(MessageMemoryBudget.DefaultLimit(), 1, kib * 1024 / 8);
    }

    [Fact]
    public void Configured_value_null_is_auto_and_zero_is_no_limit()
    {
        Assert.Equal(MessageMemoryBudget.DefaultLimit(), MessageMemoryBudget.LimitFor(null));
        Assert.Equal(long.MaxValue, MessageMemoryBudget.LimitFor(0));
        Assert.Equal(64L << 20, MessageMemoryBudget.LimitFor(64L << 20));
    }

    [Fact]
    public void Buffer_spills_when_the_budget_runs_out_and_gives_its_reservation_back()
    {
        var budget = new MessageMemoryBudget(2 * Segment);
        var data = Pattern(3 * Segment + 100);
        using var buffer = new MessageBuffer(memoryThreshold: 1L << 30, _temp, budget);

        Write(buffer, data.AsSpan(0, 2 * Segment));
        Assert.False(buffer.IsSpilled);
        Assert.Equal(2 * Segment, budget.Reserved);

        Write(buffer, data.AsSpan(2 * Segment));
        Assert.True(buffer.IsSpilled);
        Assert.Equal(0, budget.Reserved);
        Assert.Equal(data, ReadAll(buffer));
    }

    [Fact]
    public void New_message_past_the_budget_goes_to_disk_from_its_first_byte()
    {
        var budget = new MessageMemoryBudget(2 * Segment);
        var first = new MessageBuffer(1L << 30, _temp, budget);
        Write(first, Pattern(2 * Segment));
        Assert.False(first.IsSpilled);

        using (var second = new MessageBuffer(1L << 30, _temp, budget))
        {
            Write(second, "x"u8);
            Assert.True(second.IsSpilled);
            Assert.Equal("x"u8.ToArray(), ReadAll(second));
        }

        first.Dispose();
        Assert.Equal(0, budget.Reserved);
        using var third = new MessageBuffer(1L << 30, _temp, budget);
        Write(third, "y"u8);
        Assert.False(third.IsSpilled);
        Assert.Equal(Segment, budget.Reserved);
    }

    [Fact]
    public void Large_writes_through_the_scratch_span_also_stop_at_the_budget()
    {
        var budget = new MessageMemoryBudget(Segment);
        var data = Pattern(3 * Segment);
        using var buffer = new MessageBuffer(1L << 30, _temp, budget);

        // One span bigger than a segment: copied into segments afterwards, and spilled at the second.
        var span = buffer.GetSpan(data.Length);
        data.CopyTo(span);
        buffer.Advance(data.Length);

        Assert.True(buffer.IsSpilled);
        Assert.Equal(0, budget.Reserved);
        Assert.Equal(data, ReadAll(buffer));
    }

    [Fact]
    public void Past_the_budget_with_no_room_on_disk_the_write_fails_and_the_reservation_comes_back()
    {
        var budget = new MessageMemoryBudget(Segment);
        var missing = Path.Combine(_temp, "missing");
        var buffer = new MessageBuffer(1L << 30, missing, budget);

        Write(buffer, Pattern(Segment));
        Assert.Equal(Segment, budget.Reserved);
        Assert.Throws<IOException>(() => Write(buffer, "z"u8));
        Assert.Throws<IOException>(() => buffer.GetSpan());  // latched: the session answers 452 4.3.1

        buffer.Dispose();
        Assert.Equal(0, budget.Reserved);
    }

    [Property(MaxTest = 40)]
    public bool Any_budget_reads_back_identical_and_returns_every_reservation(PositiveInt size, NonNegativeInt segments, PositiveInt chunk)
    {
        var budget = new MessageMemoryBudget(segments.Get % 6 * (long)Segment);
        var data = Pattern(size.Get % (5 * Segment), size.Get);
        var ok = true;
        using (var buffer = new MessageBuffer(1L << 30, _temp, budget))
        {
            Write(buffer, data, chunk.Get % 100_000 + 1);
            ok &= budget.Reserved <= budget.Limit;
            ok &= buffer.IsSpilled == (data.Length > budget.Limit);
            ok &= ReadAll(buffer).AsSpan().SequenceEqual(data);
        }

        return ok && budget.Reserved == 0 && Directory.GetFiles(_temp).Length == 0;
    }
}
