// The system's password hashing library, libxcrypt (Debian: libcrypt1), the one that checks
// /etc/shadow: crypt_rn(3) hashes into a caller-owned struct crypt_data, so calls are
// thread-safe; crypt_checksalt(3) says whether a hash names a method the library accepts.
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace Portcullis.Appliance.Auth;

internal static partial class LibCrypt
{
    private const string Library = "libcrypt.so.1";
    private const int CryptDataSize = 32768;          // sizeof(struct crypt_data) in <crypt.h>
    private const int CryptOutputSize = 384;          // CRYPT_OUTPUT_SIZE: output[] opens the struct
    private const int CryptMaxPassphraseSize = 512;   // CRYPT_MAX_PASSPHRASE_SIZE, with the NUL

    // crypt_checksalt(3) results.
    private const int CRYPT_SALT_OK = 0;
    private const int CRYPT_SALT_METHOD_DISABLED = 2;
    private const int CRYPT_SALT_METHOD_LEGACY = 3;
    private const int CRYPT_SALT_TOO_CHEAP = 4;

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint crypt_rn(string phrase, string setting, byte[] data, int size);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int crypt_checksalt(string setting);

    // Null when libcrypt accepts the hash's method and parameters; otherwise why it cannot be used.
    public static string? Unusable(string hash)
    {
        if (hash.Length == 0 || hash.Contains('\0')) return "the hash is empty";
        if (hash[0] is '!' or '*') return "the account is locked (the hash starts with ! or *)";
        return crypt_checksalt(hash) switch
        {
            CRYPT_SALT_OK => null,
            // libxcrypt files SHA-256-crypt under legacy, but unlike DES and MD5 it is not broken.
            CRYPT_SALT_METHOD_LEGACY when hash.StartsWith("$5$", StringComparison.Ordinal) => null,
            CRYPT_SALT_METHOD_LEGACY => $"{Describe(hash)} is a legacy method libcrypt no longer accepts for new hashes; make a new one with mkpasswd",
            CRYPT_SALT_METHOD_DISABLED => $"{Describe(hash)} is disabled in this libcrypt",
            CRYPT_SALT_TOO_CHEAP => $"{Describe(hash)} uses too few rounds",
            _ => "the hash is not one libcrypt knows (expected $y$, $gy$, $7$, $6$, $5$ or $2b$/$2y$, as mkpasswd writes them)",
        };
    }

    // Hashes `password` with the method, parameters and salt of `hash` and compares the result in
    // constant time. False for a password libcrypt cannot take (NUL, over 511 bytes) or a bad hash.
    public static bool Verify(string password, string hash)
    {
        if (password.Contains('\0') || hash.Contains('\0') || Encoding.UTF8.GetByteCount(password) >= CryptMaxPassphraseSize)
            return false;
        var data = new byte[CryptDataSize];   // zeroed, as crypt_rn wants it the first time
        try
        {
            if (crypt_rn(password, hash, data, data.Length) == 0) return false;
            var output = data.AsSpan(0, CryptOutputSize);
            int end = output.IndexOf((byte)0);
            if (end <= 0 || output[0] == (byte)'*') return false;   // "*0"/"*1": failure tokens
            var expected = Encoding.UTF8.GetBytes(hash);
            return CryptographicOperations.FixedTimeEquals(output[..end], expected);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(data);
        }
    }

    private static string Describe(string hash) =>
        hash.StartsWith("$1$", StringComparison.Ordinal) ? "md5crypt ($1$)"
        : hash.StartsWith('$') ? $"the method {hash[..(hash.IndexOf('$', 1) is var i and > 0 ? i + 1 : hash.Length)]}"
        : "DES crypt";
}
