// MSBuild inline task (compiled by RoslynCodeTaskFactory; see TorchSharp.Native.targets).
// Marks one GLIBC/GLIBCXX version requirement of an ELF64 little-endian shared library as weak, so that the
// dynamic loader accepts the library on hosts whose libstdc++ lacks that version. The file is rewritten
// through a temporary file and a rename, so a hard link into the NuGet cache is never modified in place.
using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public sealed class GatiWeakenGlibcxxRequirement : Task
{
    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlagWeak = 0x2;

    [Required] public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();
    [Required] public string VersionName { get; set; } = "";
    /// <summary>Patch even where this host provides the version (a package built here runs on other hosts).</summary>
    public bool Always { get; set; }

    public override bool Execute()
    {
        if (!Always && HostProvides(VersionName))
        {
            Log.LogMessage(MessageImportance.Low, "Host libstdc++ provides {0}; libLibTorchSharp.so left as is.", VersionName);
            return true;
        }
        foreach (var item in Files)
        {
            var path = item.ItemSpec;
            try
            {
                var bytes = System.IO.File.ReadAllBytes(path);
                var result = Weaken(bytes, VersionName);
                if (result == null)
                {
                    Log.LogMessage(MessageImportance.Low, "{0}: no {1} requirement to weaken.", path, VersionName);
                    continue;
                }
                if (result == false)
                {
                    Log.LogMessage(MessageImportance.Low, "{0}: {1} already weak.", path, VersionName);
                    continue;
                }
                var temp = path + ".gati-patch.tmp";
                System.IO.File.WriteAllBytes(temp, bytes);
                ReplaceFile(temp, path);
                Log.LogMessage(MessageImportance.Normal, "{0}: marked {1} weak (Debian 12 libstdc++ load fix).", path, VersionName);
            }
            catch (Exception ex)
            {
                Log.LogError("Could not patch {0}: {1}", path, ex.Message);
            }
        }
        return !Log.HasLoggedErrors;
    }

    private static bool HostProvides(string versionName)
    {
        string[] candidates =
        {
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/usr/lib/aarch64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6",
        };
        var needle = Encoding.ASCII.GetBytes(versionName + "\0");
        foreach (var candidate in candidates)
        {
            if (!System.IO.File.Exists(candidate)) continue;
            var content = System.IO.File.ReadAllBytes(candidate);
            return IndexOf(content, needle) >= 0;
        }
        return false; // unknown host: weakening a requirement is harmless where the version exists
    }

    /// <returns>true when patched, false when already weak, null when the requirement is absent.</returns>
    private static bool? Weaken(byte[] elf, string versionName)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException("only 64-bit little-endian ELF is supported");

        var sectionHeaderOffset = checked((int)BitConverter.ToUInt64(elf, 0x28));
        int sectionHeaderSize = BitConverter.ToUInt16(elf, 0x3A);
        int sectionCount = BitConverter.ToUInt16(elf, 0x3C);
        for (var s = 0; s < sectionCount; s++)
        {
            var header = sectionHeaderOffset + s * sectionHeaderSize;
            if (BitConverter.ToUInt32(elf, header + 4) != ShtGnuVerneed) continue;

            var verneedOffset = checked((int)BitConverter.ToUInt64(elf, header + 0x18));
            var stringSection = (int)BitConverter.ToUInt32(elf, header + 0x28);
            var entryCount = (int)BitConverter.ToUInt32(elf, header + 0x2C);
            var stringHeader = sectionHeaderOffset + stringSection * sectionHeaderSize;
            var stringsOffset = checked((int)BitConverter.ToUInt64(elf, stringHeader + 0x18));

            var need = verneedOffset;
            for (var n = 0; n < entryCount; n++)
            {
                int auxCount = BitConverter.ToUInt16(elf, need + 2);
                var aux = need + (int)BitConverter.ToUInt32(elf, need + 8);
                for (var a = 0; a < auxCount; a++)
                {
                    var nameOffset = stringsOffset + (int)BitConverter.ToUInt32(elf, aux + 8);
                    if (ReadCString(elf, nameOffset) == versionName)
                    {
                        var flags = BitConverter.ToUInt16(elf, aux + 4);
                        if ((flags & VerFlagWeak) != 0) return false;
                        BitConverter.GetBytes((ushort)(flags | VerFlagWeak)).CopyTo(elf, aux + 4);
                        return true;
                    }
                    aux += (int)BitConverter.ToUInt32(elf, aux + 12);
                }
                need += (int)BitConverter.ToUInt32(elf, need + 12);
            }
        }
        return null;
    }

    private static int IndexOf(byte[] haystack, byte[] needle)
    {
        for (var i = 0; i + needle.Length <= haystack.Length; i++)
        {
            var j = 0;
            while (j < needle.Length && haystack[i + j] == needle[j]) j++;
            if (j == needle.Length) return i;
        }
        return -1;
    }

    private static string ReadCString(byte[] data, int offset)
    {
        var end = offset;
        while (end < data.Length && data[end] != 0) end++;
        return Encoding.ASCII.GetString(data, offset, end - offset);
    }

    // netstandard2.0 (what inline tasks compile against) has no File.Move overwrite overload.
    private static void ReplaceFile(string source, string destination)
    {
        if (System.IO.File.Exists(destination)) System.IO.File.Replace(source, destination, null);
        else System.IO.File.Move(source, destination);
    }
}
