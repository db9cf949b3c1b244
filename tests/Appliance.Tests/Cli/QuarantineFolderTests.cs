using Portcullis.Appliance.Cli;
using Xunit;

namespace Portcullis.Appliance.Tests.Cli;

// What the quarantine verbs check before they believe a folder is empty (permission denied
// itself needs another user: tests/EndToEnd CliTests run the binary as nobody).
public sealed class QuarantineFolderTests : IDisposable
{
    private readonly string root = Directory.CreateTempSubdirectory("portcullis-qfolder-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    [Fact]
    public void AFolderNotMadeYetIsAnEmptyQuarantine()
    {
        Assert.Null(QuarantineCommands.FolderProblem(Path.Combine(root, "not-yet", "quarantine")));
    }

    [Fact]
    public void AReadableFolderHasNoProblem()
    {
        File.WriteAllText(Path.Combine(root, "20240101-120000-1a2b3c4d.json"), "{}");
        Assert.Null(QuarantineCommands.FolderProblem(root));
    }

    [Fact]
    public void AFileWhereTheFolderShouldBeIsAProblemNamingIt()
    {
        var file = Path.Combine(root, "quarantine");
        File.WriteAllText(file, "");

        var problem = QuarantineCommands.FolderProblem(file);

        Assert.NotNull(problem);
        Assert.Contains(file, problem, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ListOfAFileWhereTheFolderShouldBeExits1()
    {
        var file = Path.Combine(root, "quarantine");
        File.WriteAllText(file, "");
        var ini = Path.Combine(root, "portcullis.ini");
        File.WriteAllText(ini, $"[quarantine]\nfolder = {file}\n");

        Assert.Equal(QuarantineCommands.ExitFailed, await CommandLine.RunAsync(["quarantine", "list", "--config", ini]));
    }
}
