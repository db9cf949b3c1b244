using System.Text;
using Portcullis.Appliance.Logging;
using Xunit;

namespace Portcullis.Appliance.Tests.Logging;

// The key=value message line, the daemon's key=value lines and the one log writer.
public sealed class MessageLogTests
{
    private static readonly MessageLogEntry Sample = new()
    {
        Session = "a1b2c3",
        Client = "[192.0.2.1]:50000",
        Helo = "mx.example.com",
        From = "alice@example.com",
        Recipients = ["bob@example.org", "carol@example.org"],
        Size = 2048,
        Verdict = MessageVerdict.Clean,
        Virus = "",
        Action = MessageAction.Delivered,
        Downstream = "250 2.0.0 Ok: queued as 4XyZ",
        Milliseconds = 37,
    };

    [Fact]
    public void FieldsComeInTheDocumentedOrder()
    {
        Assert.Equal(
            "session=a1b2c3 client=[192.0.2.1]:50000 helo=mx.example.com from=alice@example.com "
            + "rcpt=bob@example.org,carol@example.org size=2048 verdict=clean virus=\"\" action=delivered "
            + "downstream=\"250 2.0.0 Ok: queued as 4XyZ\" ms=37",
            MessageLog.Format(Sample));
    }

    [Fact]
    public void DefaultEntryHasEmptyQuotedValues()
    {
        Assert.Equal(
            "session=\"\" client=\"\" helo=\"\" from=\"\" rcpt=\"\" size=0 verdict=none virus=\"\" action=\"\" downstream=\"\" ms=0",
            MessageLog.Format(new MessageLogEntry()));
    }

    [Theory]
    [InlineData("plain", "plain")]
    [InlineData("", "\"\"")]
    [InlineData("two words", "\"two words\"")]
    [InlineData("a=b", "\"a=b\"")]
    [InlineData("say \"hi\"", "\"say \\\"hi\\\"\"")]
    [InlineData("back\\slash", "\"back\\\\slash\"")]
    [InlineData("line\r\nbreak", "\"line\\x0D\\x0Abreak\"")]
    [InlineData("nul\0tab\tdel\x7f", "\"nul\\x00tab\\x09del\\x7F\"")]
    [InlineData("c1\u0085", "\"c1\\x85\"")]
    [InlineData("ünïcødé", "ünïcødé")]
    [InlineData("<>@[]:,;", "<>@[]:,;")]
    public void ValuesAreQuotedAndEscapedWhenNeeded(string value, string expected)
    {
        var line = MessageLog.Format(new MessageLogEntry { Virus = value });
        Assert.Contains(" virus=" + expected + " action=", line, StringComparison.Ordinal);
    }

    [Fact]
    public void VerdictWords()
    {
        Assert.Equal("none", MessageLog.VerdictText(MessageVerdict.None));
        Assert.Equal("clean", MessageLog.VerdictText(MessageVerdict.Clean));
        Assert.Equal("infected", MessageLog.VerdictText(MessageVerdict.Infected));
        Assert.Equal("error", MessageLog.VerdictText(MessageVerdict.Error));
    }

    [Fact]
    public void InfectedMessageLine()
    {
        var line = MessageLog.Format(Sample with
        {
            Verdict = MessageVerdict.Infected,
            Virus = "Win.Test.EICAR_HDB-1",
            Action = MessageAction.Rejected,
            Downstream = "",
        });
        Assert.Contains("verdict=infected virus=Win.Test.EICAR_HDB-1 action=rejected downstream=\"\" ms=37", line, StringComparison.Ordinal);
    }

    [Fact]
    public void ConcurrentWritesGiveWholeLines()
    {
        var output = new MemoryStream();
        var log = new MessageLog(output);
        Parallel.For(0, 2000, i => log.Write(Sample with { Session = "s" + i, Downstream = new string('x', i % 500) }));

        var lines = Encoding.UTF8.GetString(output.ToArray()).Split('\n');
        Assert.Equal("", lines[^1]);
        Assert.Equal(2000, lines.Length - 1);
        Assert.All(lines[..^1], l => Assert.Matches("^session=s[0-9]+ client=.* ms=37$", l));
    }

    [Fact]
    public void NotDeliveredLinesCarryReasonAndReply()
    {
        var output = new MemoryStream();
        var log = new MessageLog(output);
        log.NotDelivered(Sample with { Downstream = "" }, NotDeliveredReason.RelayRefused, "554 5.7.1 Relaying denied");
        log.NotDelivered(Sample with { Downstream = "" }, NotDeliveredReason.DownstreamUnavailable, "451 4.4.1 Mail server unavailable");

        var lines = Encoding.UTF8.GetString(output.ToArray()).Split('\n');
        Assert.Contains("verdict=none virus=\"\" action=refused reason=relay-refused reply=\"554 5.7.1 Relaying denied\" downstream=\"\" ms=37", lines[0], StringComparison.Ordinal);
        Assert.Contains("action=tempfail reason=downstream-unavailable reply=\"451 4.4.1", lines[1], StringComparison.Ordinal);
    }

    [Fact]
    public void FileLinesStartWithAnRfc3339TimeAndStdoutLinesDoNot()
    {
        var folder = Directory.CreateTempSubdirectory("portcullis-log-").FullName;
        try
        {
            var output = new MemoryStream();
            var when = new DateTimeOffset(2026, 12, 6, 3, 4, 5, 678, TimeSpan.FromHours(1));
            using (var log = new MessageLog(output, folder, () => when.LocalDateTime))
            {
                log.Write(Sample);
            }

            var stdout = Encoding.UTF8.GetString(output.ToArray());
            Assert.StartsWith("session=a1b2c3 ", stdout, StringComparison.Ordinal);
            var local = when.ToLocalTime();
            var file = File.ReadAllText(Path.Combine(folder, MessageLog.FileName(DateOnly.FromDateTime(local.DateTime))));
            Assert.Matches(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d session=a1b2c3 .* ms=37\n$", file);
            Assert.Equal(when, DateTimeOffset.Parse(file[..file.IndexOf(' ')], System.Globalization.CultureInfo.InvariantCulture));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void ThroughTheWriterEveryLineArrivesWholeAfterFlush()
    {
        var output = new MemoryStream();
        var writer = new LogWriter(LogWriter.DefaultCapacity, new CollectingTarget());
        var log = new MessageLog(output, writer: writer);
        Parallel.For(0, 2000, i => log.Write(Sample with { Session = "s" + i }));
        Assert.True(writer.Flush(TimeSpan.FromSeconds(30)));

        var lines = Encoding.UTF8.GetString(output.ToArray()).Split('\n');
        Assert.Equal(2000, lines.Length - 1);
        Assert.Equal(Enumerable.Range(0, 2000).Select(i => "s" + i).Order(), lines[..^1].Select(l => l.Split(' ')[0]["session=".Length..]).Order());
        Assert.Equal(0, writer.DroppedTotal);
        Assert.True(writer.Complete(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public void AFullChannelDropsAndCountsLinesInsteadOfBlockingAndSaysSoOnceItCatchesUp()
    {
        var report = new CollectingTarget();
        var blocked = new BlockingTarget();
        var writer = new LogWriter(4, report);
        // The first line occupies the writer thread inside WriteLine; four more fill the channel.
        writer.Enqueue(blocked, "first\n", DateTimeOffset.Now);
        Assert.True(blocked.Entered.Wait(TimeSpan.FromSeconds(30)));
        for (var i = 0; i < 10; i++)
        {
            Assert.True(writer.Enqueue(blocked, $"line {i}\n", DateTimeOffset.Now));
        }

        Assert.Equal(6, writer.DroppedTotal);
        blocked.Release.Set();
        Assert.True(writer.Flush(TimeSpan.FromSeconds(30)));
        Assert.Equal(["first\n", "line 0\n", "line 1\n", "line 2\n", "line 3\n"], blocked.Lines);
        var warning = Assert.Single(report.Lines);
        Assert.Contains("level=warn msg=\"6 log line(s) dropped", warning, StringComparison.Ordinal);
        Assert.True(writer.Complete(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public void CompleteDrainsWhatIsQueuedAndLaterLinesAreWrittenByTheCaller()
    {
        var target = new CollectingTarget();
        var writer = new LogWriter(LogWriter.DefaultCapacity, target);
        for (var i = 0; i < 100; i++)
        {
            writer.Enqueue(target, $"{i}\n", DateTimeOffset.Now);
        }

        Assert.True(writer.Complete(TimeSpan.FromSeconds(30)));
        Assert.Equal(100, target.Lines.Count);
        Assert.False(writer.Enqueue(target, "late\n", DateTimeOffset.Now));
    }

    [Fact]
    public void DaemonLinesAreKeyValueWithALevelAndPrefixesOnlyForTheJournal()
    {
        Assert.Equal("level=info msg=started\n", Log.FormatLine(LogLevel.Info, "started", journal: false));
        Assert.Equal("<4>level=warn msg=\"slow downstream\"\n", Log.FormatLine(LogLevel.Warning, "slow downstream", journal: true));
        Assert.Equal("<3>level=error msg=\"one\\x0D\\x0Atwo\"\n", Log.FormatLine(LogLevel.Error, "one\r\ntwo\n", journal: true));
        Assert.Equal("level=warn msg=\"refused: Too many connections\" session=0000000B4F client=192.0.2.7 limit=20\n",
            Log.FormatLine(LogLevel.Warning, "session=0000000B4F client=192.0.2.7 refused: Too many connections", journal: false, [("limit", "20")]));
        // A quoted or odd value ends the leading fields; the rest stays in msg.
        Assert.Equal("level=info msg=\"authenticated user=\\\"a b\\\"\" session=X\n",
            Log.FormatLine(LogLevel.Info, "session=X authenticated user=\"a b\"", journal: false));
        Assert.Equal("level=info msg=\"gc allocated_bytes=1\"\n", Log.FormatLine(LogLevel.Info, "gc allocated_bytes=1", journal: false));
    }

    [Theory]
    [InlineData("2049:12345", 2049UL, 12345UL, true)]
    [InlineData("2049:12345", 2049UL, 12346UL, false)]
    [InlineData("2049:12345", 2050UL, 12345UL, false)]
    [InlineData("", 2049UL, 12345UL, false)]
    [InlineData("garbage", 2049UL, 12345UL, false)]
    [InlineData("2049:", 2049UL, 12345UL, false)]
    public void JournalStreamMustNameDescriptorTwo(string variable, ulong device, ulong inode, bool expected)
    {
        Assert.Equal(expected, Journal.Matches(variable, (device, inode)));
    }

    [Fact]
    public void FstatOfADescriptorGivesItsDeviceAndInode()
    {
        // /proc/self/fd/N resolves to the same file: compare with stat(1)'s view of a file we open.
        var path = Path.GetTempFileName();
        try
        {
            using var file = File.OpenHandle(path);
            var fd = (int)file.DangerousGetHandle();
            var ours = Journal.DeviceAndInode(fd);
            var stat = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%d:%i", path]) { RedirectStandardOutput = true })!;
            var expected = stat.StandardOutput.ReadToEnd().Trim();
            stat.WaitForExit();
            Assert.NotNull(ours);
            Assert.Equal(expected, $"{ours.Value.Device}:{ours.Value.Inode}");
            Assert.True(Journal.Matches(expected, ours));
        }
        finally
        {
            File.Delete(path);
        }
    }

    private sealed class CollectingTarget : ILogTarget
    {
        public List<string> Lines { get; } = [];

        public void WriteLine(ReadOnlySpan<char> text, DateTimeOffset time)
        {
            lock (Lines) Lines.Add(text.ToString());
        }

        public void Flush()
        {
        }
    }

    // Holds the writer thread inside its first write until released.
    private sealed class BlockingTarget : ILogTarget
    {
        public ManualResetEventSlim Entered { get; } = new();
        public ManualResetEventSlim Release { get; } = new();
        public List<string> Lines { get; } = [];

        public void WriteLine(ReadOnlySpan<char> text, DateTimeOffset time)
        {
            Lines.Add(text.ToString());
            Entered.Set();
            Release.Wait();
        }

        public void Flush()
        {
        }
    }
}
