using Portcullis.Appliance.Cli;
using Portcullis.NativeScan;
using Xunit;

namespace Portcullis.Appliance.Tests.Cli;

// `portcullis scan`'s lines and exit code: results on stdout, errors on stderr.
public sealed class ScanReportTests
{
    [Fact]
    public void CleanAndInfectedGoToStdoutErrorsToStderr()
    {
        var output = new StringWriter();
        var errors = new StringWriter();
        var report = new ScanReport(output, errors);

        report.Add("a.txt", ScanResult.Clean);
        Assert.Equal(ScanCommands.ExitClean, report.ExitCode);
        report.Add("b.exe", ScanResult.Error(0, "cannot read b.exe"));
        Assert.Equal(ScanCommands.ExitError, report.ExitCode);

        Assert.Equal("a.txt: OK\n", output.ToString());
        Assert.Equal("b.exe: ERROR cannot read b.exe\n", errors.ToString());
    }

    [Fact]
    public void AnErrorOutranksAnInfectionAndAnInfectionAClean()
    {
        var report = new ScanReport(TextWriter.Null, TextWriter.Null);
        report.Add("a", ScanResult.Clean);
        report.Add("b", InfectedResult("Eicar-Signature"));
        Assert.Equal(ScanCommands.ExitInfected, report.ExitCode);
        report.Add("c", ScanResult.Error(0, "x"));
        report.Add("d", InfectedResult("Eicar-Signature"));
        report.Add("e", ScanResult.Clean);
        Assert.Equal(ScanCommands.ExitError, report.ExitCode);
    }

    private static ScanResult InfectedResult(string name)
    {
        var output = new StringWriter();
        var result = ScanResult.Infected(name);
        new ScanReport(output, TextWriter.Null).Add("f", result);
        Assert.Equal($"f: {name} FOUND\n", output.ToString());
        return result;
    }
}
