using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using Portcullis.Appliance.Cli;
using Portcullis.Appliance.Configuration;
using Xunit;

namespace Portcullis.Appliance.Tests.Cli;

// Argument parsing, exit codes and the check-config summary (without touching the console).
public sealed class CommandLineTests
{
    private static string[] Split(string args) => args.Split(' ', StringSplitOptions.RemoveEmptyEntries);

    // Every verb path: "run", "quarantine list", ... (the hidden `help` verbs left out).
    private static List<string> VerbPaths()
    {
        var paths = new List<string>();
        void Walk(Command command, string path)
        {
            foreach (var verb in command.Subcommands.Where(c => !c.Hidden))
            {
                var name = (path + " " + verb.Name).Trim();
                paths.Add(name);
                Walk(verb, name);
            }
        }

        Walk(CommandLine.Verbs, "");
        return paths;
    }

    public static TheoryData<string> Verbs() => new(VerbPaths());

    [Fact]
    public void EveryVerbOfBeforeIsThere()
    {
        string[] expected = ["run", "check-config", "scan", "version", "reload", "status", "quarantine",
            "quarantine list", "quarantine show", "quarantine release", "quarantine delete", "quarantine purge"];
        Assert.Subset(VerbPaths().ToHashSet(), expected.ToHashSet());
    }

    [Theory]
    [InlineData("x", null, "x")]
    [InlineData("--config /x.ini x", "/x.ini", "x")]
    [InlineData("-c /x.ini a -", "/x.ini", "a -")]
    [InlineData("--config=/y.ini b", "/y.ini", "b")]
    [InlineData("a -- --config", null, "a --config")]
    [InlineData("a --config /z.ini b", "/z.ini", "a b")]
    public void ScanArgumentsParse(string args, string? config, string paths)
    {
        var parsed = CommandLine.Parse(["scan", .. Split(args)]);

        Assert.Empty(parsed.Errors);
        Assert.Null(CommandLine.UnknownOption(parsed));
        Assert.Equal(config, parsed.GetValue<string>("--config"));
        Assert.Equal(Split(paths), parsed.GetValue<string[]>("FILE"));
    }

    [Theory]
    [InlineData("scan -r folder", true)]
    [InlineData("scan --recursive folder", true)]
    [InlineData("scan folder", false)]
    public void ScanRecursiveFlag(string args, bool recursive)
    {
        var parsed = CommandLine.Parse(Split(args));

        Assert.Empty(parsed.Errors);
        Assert.Equal(recursive, parsed.GetValue<bool>("--recursive"));
    }

    [Theory]
    [InlineData("scan --config")]
    [InlineData("scan --config=")]
    [InlineData("scan --config= x")]
    [InlineData("scan")]
    [InlineData("run --config /a.ini --config /b.ini")]
    public void BadArgumentsAreParseErrors(string args)
    {
        var parsed = CommandLine.Parse(Split(args));
        Assert.NotEmpty(parsed.Errors);
        Assert.IsType<ParseErrorAction>(parsed.Action);
    }

    [Theory]
    [InlineData("scan --verbose x", "--verbose")]
    [InlineData("scan x -q", "-q")]
    [InlineData("quarantine show --bogus", "--bogus")]
    public void UnknownOptionsAreNotTakenForFiles(string args, string option)
    {
        var parsed = CommandLine.Parse(Split(args));
        Assert.Equal(option, CommandLine.UnknownOption(parsed));
    }

    [Theory]
    [InlineData("")]
    [InlineData("frobnicate")]
    [InlineData("run extra")]
    [InlineData("check-config --bogus")]
    [InlineData("scan")]
    [InlineData("scan --verbose x")]
    [InlineData("version extra")]
    [InlineData("reload extra")]
    [InlineData("status --bogus")]
    [InlineData("quarantine")]
    [InlineData("quarantine frobnicate")]
    [InlineData("quarantine list extra")]
    [InlineData("quarantine list --since yesterdayish")]
    [InlineData("quarantine show")]
    [InlineData("quarantine show a b")]
    [InlineData("quarantine release 20240101-120000-1a2b3c4d --to not-an-address")]
    [InlineData("quarantine release 20240101-120000-1a2b3c4d --to")]
    [InlineData("quarantine delete")]
    [InlineData("quarantine purge x")]
    [InlineData("quarantine purge --older-than -1")]
    [InlineData("quarantine purge --older-than 36501")]
    [InlineData("quarantine purge --older-than soon")]
    public async Task UsageErrorsExit64(string args)
    {
        Assert.Equal(CommandLine.ExitUsage, await CommandLine.RunAsync(Split(args)));
    }

    [Theory]
    [MemberData(nameof(Verbs))]
    public void EveryVerbHasHelp(string verb)
    {
        foreach (var help in new[] { "--help", "-h" })
        {
            var parsed = CommandLine.Parse([.. Split(verb), help]);
            Assert.Empty(parsed.Errors);
            Assert.IsType<HelpAction>(parsed.Action);
        }

        Assert.False(string.IsNullOrWhiteSpace(CommandLine.Parse(Split(verb)).CommandResult.Command.Description));
    }

    [Theory]
    [InlineData("run --help")]
    [InlineData("--help")]
    [InlineData("help")]
    [InlineData("help scan")]
    [InlineData("quarantine help")]
    [InlineData("quarantine release --help")]
    [InlineData("--version")]
    public async Task HelpAndVersionExit0WithoutRunningTheVerb(string args)
    {
        // `run --help` with no configuration file on this machine would exit 78 if it ran the gateway.
        Assert.Equal(CommandLine.ExitOk, await CommandLine.RunAsync(Split(args)));
    }

    [Fact]
    public void VersionLineNamesTheProgramAndItsVersion()
    {
        Assert.Matches(@"^portcullis \d+\.\d+\.\d+$", ScanCommands.ProgramVersionLine());
    }

    [Fact]
    public void QuarantineOptionsParse()
    {
        var parsed = CommandLine.Parse(Split("quarantine release 20240101-120000-1a2b3c4d --to a@example.com,<b@example.com> --to c@example.com -c /q.ini"));
        Assert.Empty(parsed.Errors);
        Assert.Equal(["a@example.com", "b@example.com", "c@example.com"], parsed.GetValue<string[]>("--to")!);
        Assert.Equal("20240101-120000-1a2b3c4d", parsed.GetValue<string>("ID"));
        Assert.Equal("/q.ini", parsed.GetValue<string>("--config"));

        parsed = CommandLine.Parse(Split("quarantine list --since 2024-01-31 --virus Eicar* --json"));
        Assert.Empty(parsed.Errors);
        Assert.Equal(new DateTime(2024, 1, 31), parsed.GetValue<DateTimeOffset?>("--since")!.Value.LocalDateTime);
        Assert.Equal("Eicar*", parsed.GetValue<string>("--virus"));
        Assert.True(parsed.GetValue<bool>("--json"));

        parsed = CommandLine.Parse(Split("quarantine purge --older-than 7"));
        Assert.Empty(parsed.Errors);
        Assert.Equal(7, parsed.GetValue<int?>("--older-than"));
    }

    [Fact]
    public async Task CheckConfigExitCodes()
    {
        var path = Path.Combine(Path.GetTempPath(), "portcullis-cli-" + Guid.NewGuid().ToString("N") + ".ini");
        try
        {
            File.WriteAllText(path, "[general]\nsmtp_server_port = 2626\n");
            Assert.Equal(CommandLine.ExitOk, await CommandLine.RunAsync(["check-config", "--config", path]));

            File.WriteAllText(path, "[general]\nsmtp_server_port = nope\n");
            Assert.Equal(CommandLine.ExitConfig, await CommandLine.RunAsync(["check-config", "--config", path]));
            Assert.Equal(CommandLine.ExitConfig, await CommandLine.RunAsync(["run", "--config", path]));
            Assert.Equal(CommandLine.ExitConfig, await CommandLine.RunAsync(["quarantine", "list", "--config", path]));
        }
        finally
        {
            File.Delete(path);
        }

        Assert.Equal(CommandLine.ExitConfig, await CommandLine.RunAsync(["check-config", "--config", path]));
    }

    [Fact]
    public void SummaryNamesListenersTargetAndDatabase()
    {
        var config = ConfigLoader.LoadFromString("[general]\ninterfaces = 0.0.0.0:25 [::]:465/tls\nsmtp_server_address = ::1\n", "/t.ini");
        var summary = CommandLine.Summary(config);
        Assert.Contains("configuration OK: /t.ini", summary, StringComparison.Ordinal);
        Assert.Contains("listeners: 0.0.0.0:25, [::]:465/tls", summary, StringComparison.Ordinal);
        Assert.Contains("forward to: [::1]:2525", summary, StringComparison.Ordinal);
        Assert.Contains("database folder: /var/lib/clamav", summary, StringComparison.Ordinal);
    }
}
