using System.Security.Cryptography;
using System.Text;

namespace Portcullis.NativeScan.Tests;

// A signature folder written by the tests themselves (no official database here): an MD5 .hdb
// line for Debian's clam.exe test file and an .ndb body signature for the EICAR string.
// One engine is loaded per test class that uses the fixture.
public sealed class SignatureFixture : IDisposable
{
    public const string TestFiles = "/usr/share/clamav-testfiles";
    public const string ClamExeSignature = "Portcullis.Test.ClamExe";
    public const string EicarSignature = "Portcullis.Test.Eicar";

    public SignatureFixture()
    {
        Folder = WriteFolder();
        Engine = ScanEngine.Load(new EngineOptions(Folder));
    }

    public string Folder { get; }

    public ScanEngine Engine { get; }

    public static string ClamExePath => Path.Combine(TestFiles, "clam.exe");

    // Assembled from pieces so this source file is not itself flagged by a scanner.
    public static byte[] Eicar { get; } = Encoding.ASCII.GetBytes(
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-" + "TEST-FILE!$H+H*");

    public static string HdbLine(string path)
    {
        var bytes = File.ReadAllBytes(path);
        return $"{Convert.ToHexStringLower(MD5.HashData(bytes))}:{bytes.Length}:{Path.GetFileName(path)}";
    }

    public static string WriteFolder()
    {
        var folder = Directory.CreateTempSubdirectory("portcullis-sigs-").FullName;
        var clamExe = File.ReadAllBytes(ClamExePath);
        File.WriteAllText(
            Path.Combine(folder, "portcullis-test.hdb"),
            $"{Convert.ToHexStringLower(MD5.HashData(clamExe))}:{clamExe.Length}:{ClamExeSignature}\n");
        File.WriteAllText(
            Path.Combine(folder, "portcullis-test.ndb"),
            $"{EicarSignature}:0:*:{Convert.ToHexStringLower(Eicar)}\n");
        return folder;
    }

    public static void DeleteFolder(string folder)
    {
        try
        {
            Directory.Delete(folder, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    public void Dispose()
    {
        Engine.Dispose();
        DeleteFolder(Folder);
    }
}
