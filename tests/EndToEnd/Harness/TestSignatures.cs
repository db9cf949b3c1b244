using System.Diagnostics;
using System.Text;

namespace Portcullis.EndToEnd.Harness;

// The tiny signature folder every gateway in these tests loads: an MD5 signature for Debian's
// clam.exe test file and a body signature for the EICAR test string.
public static class TestSignatures
{
    public const string TestFiles = "/usr/share/clamav-testfiles";
    public const string EicarName = "Portcullis.Test.EICAR";
    public const string ClamExeName = "clam.exe"; // the name sigtool --md5 gives the signature

    public static readonly string ClamExe = Path.Combine(TestFiles, "clam.exe");
    public static readonly string ClamZip = Path.Combine(TestFiles, "clam.zip");

    // The 68-byte EICAR anti-virus test string.
    public static readonly string Eicar = @"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

    private static readonly Lazy<Task<string>> ClamExeMd5Line = new(RunSigtoolAsync);

    public static async Task WriteAsync(string databaseFolder)
    {
        Directory.CreateDirectory(databaseFolder);
        await File.WriteAllTextAsync(Path.Combine(databaseFolder, "test.hdb"), await ClamExeMd5Line.Value + "\n");
        var hex = Convert.ToHexStringLower(Encoding.ASCII.GetBytes(Eicar));
        await File.WriteAllTextAsync(Path.Combine(databaseFolder, "test.ndb"), $"{EicarName}:0:*:{hex}\n");
    }

    private static async Task<string> RunSigtoolAsync()
    {
        if (Eicar.Length != 68)
        {
            throw new InvalidOperationException("the EICAR string must be 68 bytes");
        }

        var start = new ProcessStartInfo("sigtool") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add("--md5");
        start.ArgumentList.Add(ClamExe);
        using var process = Process.Start(start) ?? throw new InvalidOperationException("cannot start sigtool");
        var output = await process.StandardOutput.ReadToEndAsync();
        var errors = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        var line = output.Trim();
        if (process.ExitCode != 0 || line.Split(':').Length != 3)
        {
            throw new InvalidOperationException($"sigtool --md5 {ClamExe} failed (exit {process.ExitCode}): {output}{errors}");
        }

        return line;
    }
}
